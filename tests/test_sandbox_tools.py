"""The bash tool over the pool: results, progress, cancellation and cattle, on real bubblewrap."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import tools.shell
from tests.sandbox_helpers import WAIT_S, RecordingContext, make_context, make_fifo, read_fifo, small_settings
from tools.base import ToolError
from tools.sandbox.pool import SandboxPool
from tools.shell import bash_tool

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    pool = SandboxPool(small_settings("bwrap", output_bytes=2_000))
    yield pool
    await pool.close()


@pytest.fixture
def ctx(tmp_path: Path) -> RecordingContext:
    return make_context(tmp_path)


async def test_bash_returns_stdout_stderr_and_the_exit_code(pool: SandboxPool, ctx: RecordingContext) -> None:
    result = await bash_tool(pool).call(ctx, {"command": "echo hi; echo oops >&2; sh -c 'exit 4'"})
    assert not result.is_error
    assert result.joined_text() == "hi\n[stderr]\noops\n[exit code: 4]"
    assert result.structured == {
        "stdout": "hi\n", "stderr": "oops\n", "exit_code": 4, "timed_out": False, "truncated": False,
        "output_files": [],
    }  # fmt: skip


async def test_a_timeout_is_an_error_result_that_says_what_was_killed(pool: SandboxPool, ctx: RecordingContext) -> None:
    result = await bash_tool(pool).call(ctx, {"command": "sleep 60", "timeout_ms": 300})
    assert result.is_error and "timed out after 0.3s" in result.joined_text()


async def test_long_output_names_the_file_holding_all_of_it(pool: SandboxPool, ctx: RecordingContext) -> None:
    result = await bash_tool(pool).call(ctx, {"command": "seq 100000"})
    assert result.structured is not None
    [spilled] = result.structured["output_files"]
    assert f"full output in {spilled}" in result.joined_text()
    assert (ctx.workspace / Path(spilled).relative_to("/workspace")).read_text().endswith("99999\n100000\n")


async def test_bad_arguments_are_tool_errors(pool: SandboxPool, ctx: RecordingContext) -> None:
    with pytest.raises(ToolError, match="timeout_ms"):
        await bash_tool(pool).call(ctx, {"command": "true", "timeout_ms": "soon"})
    with pytest.raises(ToolError, match="command"):
        await bash_tool(pool).call(ctx, {})


async def test_a_long_command_sends_progress(
    pool: SandboxPool, ctx: RecordingContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools.shell, "PROGRESS_EVERY_S", 0.05)
    gate = make_fifo(ctx.workspace, "gate")
    progressed = anyio.Event()
    original = ctx.progress

    async def progress(value: float, total: float | None = None, message: str | None = None) -> None:
        await original(value, total, message)
        progressed.set()

    ctx.progress = progress  # type: ignore[method-assign]  # observe the call without sleeping
    async with anyio.create_task_group() as tg:
        tg.start_soon(bash_tool(pool).call, ctx, {"command": "read line < gate; echo $line"})
        with anyio.fail_after(WAIT_S):
            await progressed.wait()
        await anyio.to_thread.run_sync(gate.write_text, "go\n")
    assert ctx.progress_calls and ctx.progress_calls[0][2] is not None


async def test_cancelling_the_call_kills_the_running_command(pool: SandboxPool, ctx: RecordingContext) -> None:
    fifo = make_fifo(ctx.workspace)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            bash_tool(pool).call, ctx, {"command": "sleep 300 & echo $! > child.pid; echo go > started; wait"}
        )
        await read_fifo(fifo)
        tg.cancel_scope.cancel()
    after = await bash_tool(pool).call(ctx, {"command": "kill -0 $(cat child.pid) 2>/dev/null || echo gone"})
    assert after.joined_text().startswith("gone")


async def test_killing_the_sandbox_mid_call_is_a_tool_error_and_the_next_call_works_on_the_same_workspace(
    pool: SandboxPool, ctx: RecordingContext
) -> None:
    """The cattle test: the sandbox dies from outside, the session goes on."""
    bash = bash_tool(pool)
    await bash.call(ctx, {"command": "echo survives > note.txt"})
    fifo = make_fifo(ctx.workspace)
    sandbox = pool.get_existing(ctx.session_id)
    assert sandbox is not None and sandbox.pid is not None

    async def kill_when_started() -> None:
        await read_fifo(fifo)
        os.kill(sandbox.pid, signal.SIGKILL)  # type: ignore[arg-type]  # checked above

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_when_started)
        with pytest.raises(ToolError, match="sandbox was lost.*SIGKILL"):
            await bash.call(ctx, {"command": "echo go > started; sleep 30"})
    after = await bash.call(ctx, {"command": "cat note.txt"})
    assert after.joined_text().startswith("survives")
    assert ctx.types() == ["sandbox.provisioned", "sandbox.lost", "sandbox.provisioned"]


def test_bash_is_annotated_as_neither_read_only_nor_idempotent() -> None:
    spec = tools.shell.SPEC
    assert spec.annotations.read_only is False and spec.annotations.idempotent is False


async def test_a_command_that_kills_every_process_of_its_sandbox_is_a_tool_error_then_the_session_goes_on(
    pool: SandboxPool, ctx: RecordingContext
) -> None:
    bash = bash_tool(pool)
    with pytest.raises(ToolError, match="sandbox was lost"):
        await bash.call(ctx, {"command": "kill -9 -1"})
    assert (await bash.call(ctx, {"command": "echo back"})).joined_text().startswith("back")
    assert ctx.types() == ["sandbox.provisioned", "sandbox.lost", "sandbox.provisioned"]
