"""``bash``: run a command in the session's persistent shell, inside its sandbox.

The shell persists between calls (``cd``, ``export``, background jobs), like the
terminals models are trained on; ``restart: true`` gives a fresh one. While a command
runs, an MCP progress notification goes out every :data:`PROGRESS_EVERY_S`; a
cancelled call kills the command's process tree. A lost sandbox is a
:class:`~tools.base.ToolError` naming what happened; the next call gets a new sandbox
on the same workspace.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio

from tools.base import Annotations, CallContext, ToolError, ToolResult, ToolSpec
from tools.sandbox.pool import SandboxPool
from tools.sandbox.protocol import ExecResult, SandboxLost, SandboxUnavailable

PROGRESS_EVERY_S = 5.0
MAX_TIMEOUT_MS = 3_600_000

SPEC = ToolSpec(
    name="bash",
    description=(
        "Run a bash command in this session's sandbox (a persistent shell: cd, exported variables and "
        "background jobs carry over between calls). The workspace is /workspace; there is no network. "
        "Returns stdout, stderr and the exit code; long output is cut and saved in full to a file it names. "
        "Use restart: true to get a fresh shell."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to run."},
            "timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_TIMEOUT_MS,
                "description": "Wall-time limit; the whole process tree is killed after it.",
            },
            "restart": {"type": "boolean", "default": False, "description": "Start a fresh shell first."},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
    annotations=Annotations(read_only=False, destructive=True, idempotent=False, open_world=False, title="Bash"),
)


class BashTool:
    """The ``bash`` tool over a :class:`SandboxPool`."""

    spec = SPEC

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        command = args.get("command")
        if not isinstance(command, str):
            raise ToolError("`command` must be a string")
        timeout_s = self._timeout(args.get("timeout_ms"))
        restart = bool(args.get("restart", False))
        return render(await self._run_with_progress(ctx, command, timeout_s, restart), timeout_s)

    def _timeout(self, timeout_ms: object) -> float:
        default = self.pool.settings.limits.timeout_s
        if timeout_ms is None:
            return default
        if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or not 0 < timeout_ms <= MAX_TIMEOUT_MS:
            raise ToolError(f"`timeout_ms` must be an integer between 1 and {MAX_TIMEOUT_MS}")
        return timeout_ms / 1000

    async def _run_with_progress(self, ctx: CallContext, command: str, timeout_s: float, restart: bool) -> ExecResult:
        """Run the command while a side task reports progress; sandbox failures become ToolError."""
        failure: ToolError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_report_progress, ctx, timeout_s)
            try:
                result = await self.pool.exec(ctx, command, timeout_s=timeout_s, restart=restart)
            except SandboxLost as exc:
                failure = ToolError(
                    f"The sandbox was lost: {exc.reason}. The next call gets a fresh sandbox on the same "
                    "workspace (files are kept; the shell state is not)."
                )
            except SandboxUnavailable as exc:
                failure = ToolError(f"No sandbox available: {exc}")
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result


async def _report_progress(ctx: CallContext, timeout_s: float) -> None:
    started = time.monotonic()
    while True:
        await anyio.sleep(PROGRESS_EVERY_S)
        elapsed = time.monotonic() - started
        await ctx.progress(elapsed, timeout_s, f"running for {elapsed:.0f}s")


def render(result: ExecResult, timeout_s: float) -> ToolResult:
    """Text for the model (stdout, then labelled stderr and status lines) plus structured content."""
    parts = list(result.notes)
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append("[stderr]\n" + result.stderr.rstrip("\n"))
    if result.truncated:
        parts.append("[output truncated; full output in " + ", ".join(result.output_files) + "]")
    if result.timed_out:
        parts.append(f"[timed out after {timeout_s:g}s: the process tree was killed and the shell restarted]")
    elif result.shell_restarted and result.exit_code is not None:
        parts.append("[the shell exited; a fresh one will run the next command]")
    parts.append(f"[exit code: {result.exit_code if result.exit_code is not None else 'none'}]")
    structured = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "truncated": result.truncated,
        "output_files": result.output_files,
    }
    out = ToolResult.text("\n".join(parts), structured=structured)
    out.is_error = result.timed_out
    return out


def bash_tool(pool: SandboxPool) -> BashTool:
    return BashTool(pool)
