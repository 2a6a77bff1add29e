"""Factories for the sandbox tests: a recording CallContext, small limits, a FIFO rendezvous."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tools.sandbox.settings import SandboxLimits, SandboxSettings

WAIT_S = 20.0  # every rendezvous with the sandbox is bounded by this


@dataclass
class RecordingContext:
    """A CallContext that records what a tool emits (events and progress) instead of logging it."""

    session_id: str
    workspace: Path
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    progress_calls: list[tuple[float, float | None, str | None]] = field(default_factory=list)

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        self.events.append((type, data))

    async def read_events(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
        types: Sequence[str] | None = None,
        order: str = "asc",
    ) -> list[dict[str, Any]]:
        return [{"type": t, "data": d} for t, d in self.events]

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        self.progress_calls.append((progress, total, message))

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


def small_settings(backend: str = "bwrap", **limits: Any) -> SandboxSettings:
    """Limits small enough that bombs end quickly on a shared 2-core machine."""
    base: dict[str, Any] = {"timeout_s": 20, "memory_mb": 256, "pids": 64, "cpu_s": 30}
    return SandboxSettings(backend=backend, limits=SandboxLimits(**{**base, **limits}))  # type: ignore[arg-type]  # literal from a str


def make_context(root: Path, session_id: str = "s1") -> RecordingContext:
    workspace = root / "workspaces" / session_id
    workspace.mkdir(parents=True, exist_ok=True)
    return RecordingContext(session_id=session_id, workspace=workspace)


def make_fifo(directory: Path, name: str = "started") -> Path:
    """A FIFO in the workspace that a command writes to when it has started (no sleeping to find out)."""
    path = directory / name
    os.mkfifo(path, 0o666)
    os.chmod(path, 0o666)
    return path


async def read_fifo(path: Path) -> str:
    """Block (in a thread, bounded) until the sandbox writes a line into ``path``."""

    def read() -> str:
        with open(path) as f:
            return f.readline().strip()

    with anyio.fail_after(WAIT_S):
        return await anyio.to_thread.run_sync(read, abandon_on_cancel=True)
