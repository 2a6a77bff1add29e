"""One sandbox per session, provisioned on first need, replaced when lost, stopped when idle.

Events (through the calling tool's ``ctx.emit``):

- ``sandbox.provisioned`` ``{backend, provision_ms, replaces_lost}``
- ``sandbox.lost`` ``{backend, reason}`` — the call in flight fails; the next one provisions afresh
- ``sandbox.stopped`` ``{backend, reason: "idle" | "closed", idle_s}`` — the workspace is kept
- ``sandbox.egress_refused`` ``{host, reason, count}`` — the egress proxy refused connections
  (see :mod:`tools.sandbox.egress`); reported after the call during which they happened, one
  event per host and reason

The pool knows a session only by ``ctx.session_id`` and ``ctx.workspace`` (the host
directory the gateway chose); it creates nothing else on the host.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from tools.base import CallContext
from tools.sandbox.bwrap import BwrapBackend
from tools.sandbox.protocol import ExecResult, Sandbox, SandboxBackend, SandboxLost, SandboxUnavailable
from tools.sandbox.settings import SandboxSettings
from tools.sandbox.unsafe import UnsafeBackend


def backend_for(settings: SandboxSettings) -> SandboxBackend:
    """The configured backend, or :class:`SandboxUnavailable` saying why it cannot run (never a fallback)."""
    backend: SandboxBackend = BwrapBackend(settings) if settings.backend == "bwrap" else UnsafeBackend(settings)
    verdict = backend.viability()
    if not verdict.ok:
        raise SandboxUnavailable(f"sandbox backend {backend.name!r} cannot run here: {verdict.reason}")
    return backend


@dataclass(slots=True)
class _Entry:
    sandbox: Sandbox
    ctx: CallContext
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0


class SandboxPool:
    """Lazily provisioned sandboxes keyed by session id."""

    def __init__(
        self, settings: SandboxSettings, workspace_root: Path | None = None, *, backend: SandboxBackend | None = None
    ) -> None:
        self.settings = settings
        self.workspace_root = workspace_root
        self.backend = backend or backend_for(settings)
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._lost: set[str] = set()

    def get_existing(self, session_id: str) -> Sandbox | None:
        entry = self._entries.get(session_id)
        return entry.sandbox if entry else None

    async def exec(self, ctx: CallContext, command: str, *, timeout_s: float, restart: bool = False) -> ExecResult:
        """Run a command in the session's sandbox; on loss emit ``sandbox.lost``, forget it, re-raise."""
        entry = await self._entry(ctx)
        entry.busy += 1
        try:
            result = await entry.sandbox.exec(command, timeout_s=timeout_s, restart=restart)
        except SandboxLost as exc:
            await self._report_refusals(ctx, entry.sandbox)
            await self._forget(ctx.session_id, entry)
            self._lost.add(ctx.session_id)
            await ctx.emit("sandbox.lost", {"backend": self.backend.name, "reason": exc.reason})
            raise
        finally:
            entry.busy -= 1
            entry.last_used = time.monotonic()
        await self._report_refusals(ctx, entry.sandbox)
        return result

    async def _report_refusals(self, ctx: CallContext, sandbox: Sandbox) -> None:
        counts = Counter((r.host, r.reason) for r in sandbox.take_egress_refusals())
        for (host, reason), count in counts.items():
            await ctx.emit("sandbox.egress_refused", {"host": host, "reason": reason, "count": count})

    async def _entry(self, ctx: CallContext) -> _Entry:
        lock = self._locks.setdefault(ctx.session_id, anyio.Lock())
        async with lock:
            entry = self._entries.get(ctx.session_id)
            if entry is not None:
                entry.ctx = ctx
                return entry
            workspace = self._check_workspace(ctx.workspace)
            started = time.monotonic()
            sandbox = await self.backend.provision(ctx.session_id, workspace)
            entry = self._entries[ctx.session_id] = _Entry(sandbox, ctx)
            await ctx.emit(
                "sandbox.provisioned",
                {
                    "backend": self.backend.name,
                    "provision_ms": round((time.monotonic() - started) * 1000, 1),
                    "replaces_lost": ctx.session_id in self._lost,
                },
            )
            self._lost.discard(ctx.session_id)
            return entry

    def _check_workspace(self, workspace: Path) -> Path:
        if self.workspace_root is not None and not workspace.is_relative_to(self.workspace_root):
            raise SandboxUnavailable(f"workspace {workspace} is not under the pool's root {self.workspace_root}")
        workspace.mkdir(parents=True, exist_ok=True)
        return workspace

    async def _forget(self, session_id: str, entry: _Entry) -> None:
        if self._entries.get(session_id) is entry:
            del self._entries[session_id]
        with anyio.CancelScope(shield=True):
            await entry.sandbox.destroy()

    async def stop(self, session_id: str, *, reason: str = "closed") -> bool:
        """Stop one session's sandbox (the workspace stays); False if it had none."""
        entry = self._entries.get(session_id)
        if entry is None:
            return False
        idle_s = time.monotonic() - entry.last_used
        await self._forget(session_id, entry)
        await entry.ctx.emit(
            "sandbox.stopped", {"backend": self.backend.name, "reason": reason, "idle_s": round(idle_s, 1)}
        )
        return True

    async def stop_idle(self, now: float | None = None) -> list[str]:
        """Stop every sandbox idle for at least ``idle_stop_s``; returns their session ids."""
        now = time.monotonic() if now is None else now
        idle = [
            sid for sid, e in self._entries.items() if e.busy == 0 and now - e.last_used >= self.settings.idle_stop_s
        ]
        for sid in idle:
            await self.stop(sid, reason="idle")
        return idle

    async def run_idle_reaper(self) -> None:
        """Run forever (start it in the gateway's task group): stop idle sandboxes periodically."""
        interval = max(1.0, min(60.0, self.settings.idle_stop_s / 4))
        while True:
            await anyio.sleep(interval)
            await self.stop_idle()

    async def close(self) -> None:
        """Destroy every sandbox (gateway shutdown: call it before the ledger closes, it emits)."""
        with anyio.CancelScope(shield=True):
            for sid in list(self._entries):
                await self.stop(sid, reason="closed")


@asynccontextmanager
async def running_pool(settings: SandboxSettings, workspace_root: Path | None = None) -> AsyncIterator[SandboxPool]:
    """A pool with its idle reaper running; every sandbox is destroyed on exit.

    Raises :class:`SandboxUnavailable` (with what to install) if the configured backend cannot run.
    """
    pool = SandboxPool(settings, workspace_root)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run_idle_reaper)
        try:
            yield pool
        finally:
            tg.cancel_scope.cancel()
            await pool.close()


__all__ = ["SandboxPool", "backend_for", "running_pool"]
