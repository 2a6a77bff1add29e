"""The gateway's side of the supervisor conversation, shared by every backend that runs one.

One request at a time (a lock): a session's shell runs one command after another,
like a terminal. Everything that means the sandbox is gone, the supervisor's pipe at
end of file, a reply that never comes, a process that exited, becomes
:class:`SandboxLost` with a reason a person can read.
"""

from __future__ import annotations

import json
import signal
from dataclasses import fields
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tools.sandbox.protocol import ExecResult, SandboxLost

MAX_REPLY_BYTES = 64 << 20
# Added to a command's own timeout before the supervisor counts as unresponsive.
GRACE_S = 10.0
_RESULT_FIELDS = {f.name for f in fields(ExecResult)}


class SupervisorChannel:
    """Talks JSON lines to a supervisor process over its stdin/stdout."""

    def __init__(self, process: Process) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("the supervisor process needs piped stdin and stdout")
        self.process = process
        self._send = process.stdin
        self._reader = BufferedByteReceiveStream(process.stdout)
        self._lock = anyio.Lock()
        self.lost: str | None = None

    async def ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the supervisor's first line (it has started its shell)."""
        return await self._receive(timeout_s)

    async def exec(self, command: str, *, timeout_s: float, restart: bool) -> ExecResult:
        """Run one command; on cancellation tell the supervisor to kill it, then re-raise."""
        async with self._lock:
            await self._write({"op": "exec", "command": command, "timeout": timeout_s, "restart": restart})
            try:
                reply = await self._receive(timeout_s + GRACE_S)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._cancel_running()
                raise
            return ExecResult(**{k: v for k, v in reply.items() if k in _RESULT_FIELDS})

    async def ping(self, timeout_s: float = 5.0) -> bool:
        if self.lost is not None:
            return False
        async with self._lock:
            try:
                await self._write({"op": "ping"})
                await self._receive(timeout_s)
            except SandboxLost:
                return False
        return True

    async def _cancel_running(self) -> None:
        try:
            await self._write({"op": "cancel"})
            reply = await self._receive(GRACE_S)
            if not reply.get("cancelled"):  # the command ended before the cancel arrived: its ack follows
                await self._receive(GRACE_S)
        except SandboxLost:
            pass  # already recorded in self.lost; the pool will replace the sandbox

    async def _write(self, message: dict[str, Any]) -> None:
        if self.lost is not None:
            raise SandboxLost(self.lost)
        try:
            await self._send.send(json.dumps(message).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise await self._lose("the supervisor's input pipe is closed") from None

    async def _receive(self, timeout_s: float) -> dict[str, Any]:
        if self.lost is not None:
            raise SandboxLost(self.lost)
        try:
            with anyio.fail_after(timeout_s):
                line = await self._reader.receive_until(b"\n", MAX_REPLY_BYTES)
        except TimeoutError:
            raise await self._lose(f"the supervisor did not answer within {timeout_s:g}s (unresponsive)") from None
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise await self._lose("the supervisor's output pipe closed") from None
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def _lose(self, what: str) -> SandboxLost:
        """Record the loss, kill what is left, and describe how the process ended."""
        if self.process.returncode is None:
            with anyio.move_on_after(1.0):
                await self.process.wait()
        code = self.process.returncode
        if code is None:
            self.process.kill()
            self.lost = f"{what}; the sandbox was killed"
        else:
            self.lost = f"{what}; the sandbox process {describe_exit(code)}"
        if said := await self._stderr_tail():
            self.lost += f" (it said: {said})"
        return SandboxLost(self.lost)

    async def _stderr_tail(self) -> str:
        """What bwrap or the supervisor printed before dying (they only write there when failing)."""
        if self.process.stderr is None:
            return ""
        data = b""
        with anyio.move_on_after(0.5):
            while len(data) < 2000:
                try:
                    data += await self.process.stderr.receive(2000)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
        return data.decode("utf-8", "replace").strip()[-500:]

    async def close(self) -> None:
        """Kill the process (and with it, via --die-with-parent / the pipe, the whole tree)."""
        if self.lost is None:
            self.lost = "the sandbox was destroyed"
        with anyio.CancelScope(shield=True):
            await self._send.aclose()  # a supervisor at end of input kills its commands and exits
            with anyio.move_on_after(1.0):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                with anyio.move_on_after(5.0):
                    await self.process.wait()
            await self._reader.aclose()


def describe_exit(code: int) -> str:
    """'exited with code 3' or 'was killed by signal 9 (SIGKILL)' (asyncio reports signals as -N)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"
