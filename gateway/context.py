"""The :class:`tools.base.CallContext` the gateway hands a tool for one call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.credentials import Grant
from gateway.ledger import Ledger, Slice
from gateway.redact import Redactor

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


@dataclass
class ToolContext:
    session_id: str
    workspace_root: Path
    ledger: Ledger
    redactor: Redactor
    progress_fn: ProgressFn | None = None
    credential: Grant | None = None  # set by the pipeline's credential step, for upstream and HTTP tools

    @property
    def workspace(self) -> Path:
        """The session's workspace directory, created on first use (most calls never need it)."""
        path = self.workspace_root / self.session_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        await self.ledger.append(self.session_id, type, self.redactor.value(data))

    async def read_events(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
        types: Sequence[str] | None = None,
        order: str = "asc",
    ) -> list[dict[str, Any]]:
        window = Slice(after=after, before=before, limit=limit, types=tuple(types or ()), order=order)
        return [e.to_json() for e in await self.ledger.read(self.session_id, window)]

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self.progress_fn is not None:
            await self.progress_fn(progress, total, message)
