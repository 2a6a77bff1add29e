"""The contract every Sandbox backend keeps, run against bubblewrap and the unsafe backend alike."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.sandbox_helpers import RecordingContext, make_context, make_fifo, read_fifo, small_settings
from tools.sandbox.pool import SandboxPool
from tools.sandbox.protocol import Sandbox, SandboxLost

pytestmark = pytest.mark.anyio


class SandboxContract:
    """Inherited once per backend (keyring-style); ``backend`` names it."""

    backend = ""

    @pytest.fixture
    async def pool(self) -> AsyncIterator[SandboxPool]:
        pool = SandboxPool(small_settings(self.backend, output_bytes=10_000))
        yield pool
        await pool.close()

    @pytest.fixture
    def ctx(self, tmp_path: Path) -> RecordingContext:
        return make_context(tmp_path, "a session with spaces")

    async def test_a_command_returns_stdout_stderr_and_exit_code(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        result = await pool.exec(ctx, "echo out; echo err >&2; exit 3", timeout_s=10)
        assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)

    async def test_cd_and_exported_variables_persist_between_calls(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        await pool.exec(ctx, "mkdir -p sub && cd sub && export GREETING=hello", timeout_s=10)
        result = await pool.exec(ctx, 'echo "$GREETING from $(basename "$PWD")"', timeout_s=10)
        assert result.stdout == "hello from sub\n"

    async def test_a_background_process_survives_until_the_next_call(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        started = await pool.exec(ctx, "sleep 60 & echo $!", timeout_s=10)
        check = await pool.exec(ctx, f"kill -0 {started.stdout.strip()} && echo alive", timeout_s=10)
        assert check.stdout == "alive\n"

    async def test_exit_in_a_command_reports_its_code_and_the_next_call_gets_a_fresh_shell(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        result = await pool.exec(ctx, "export GONE=1; exit 7", timeout_s=10)
        assert (result.exit_code, result.shell_restarted) == (7, True)
        assert (await pool.exec(ctx, 'echo "[$GONE]"', timeout_s=10)).stdout == "[]\n"

    async def test_removing_the_keyhand_directory_does_not_break_the_next_call(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        await pool.exec(ctx, "rm -rf .keyhand", timeout_s=10)
        assert (await pool.exec(ctx, "echo fine", timeout_s=10)).stdout == "fine\n"

    async def test_restart_gives_a_fresh_shell(self, pool: SandboxPool, ctx: RecordingContext) -> None:
        await pool.exec(ctx, "export KEPT=yes", timeout_s=10)
        result = await pool.exec(ctx, 'echo "[$KEPT]"', timeout_s=10, restart=True)
        assert result.stdout == "[]\n" and result.shell_restarted

    async def test_a_timeout_kills_the_whole_process_tree_and_the_shell_goes_on(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        result = await pool.exec(ctx, "sleep 300 & echo $! > child.pid; sleep 300", timeout_s=0.5)
        assert result.timed_out and result.exit_code is None
        after = await pool.exec(ctx, "kill -0 $(cat child.pid) 2>/dev/null && echo alive || echo gone", timeout_s=10)
        assert after.stdout == "gone\n"

    async def test_output_over_the_cap_is_cut_and_spilled_whole_to_the_workspace(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        result = await pool.exec(ctx, "head -c 300000 /dev/zero | tr '\\0' a", timeout_s=10)
        assert result.truncated and len(result.stdout) + len(result.stderr) <= 10_000
        [spilled] = result.output_files
        host_path = ctx.workspace / Path(spilled).relative_to(self.workspace_prefix(ctx))
        assert host_path.stat().st_size == 300_000

    def workspace_prefix(self, ctx: RecordingContext) -> Path:
        return Path("/workspace")

    async def test_a_killed_sandbox_fails_the_call_and_the_next_call_gets_a_fresh_one(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        await pool.exec(ctx, "echo kept > note.txt", timeout_s=10)
        fifo = make_fifo(ctx.workspace)
        sandbox = pool.get_existing(ctx.session_id)
        assert sandbox is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_then_kill, fifo, sandbox)
            with pytest.raises(SandboxLost):
                await pool.exec(ctx, "echo go > started; sleep 30", timeout_s=60)
        assert ctx.types() == ["sandbox.provisioned", "sandbox.lost"]
        again = await pool.exec(ctx, "cat note.txt", timeout_s=10)
        assert again.stdout == "kept\n"
        assert ctx.types()[-1] == "sandbox.provisioned" and ctx.events[-1][1]["replaces_lost"] is True

    async def test_cancelling_a_call_kills_its_command(self, pool: SandboxPool, ctx: RecordingContext) -> None:
        fifo = make_fifo(ctx.workspace)
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await pool.exec(ctx, "sleep 300 & echo $! > child.pid; echo go > started; wait", timeout_s=60)

            tg.start_soon(run)
            await read_fifo(fifo)
            tg.cancel_scope.cancel()
        after = await pool.exec(ctx, "kill -0 $(cat child.pid) 2>/dev/null && echo alive || echo gone", timeout_s=10)
        assert after.stdout == "gone\n"

    async def test_an_idle_sandbox_is_stopped_and_its_workspace_kept(
        self, pool: SandboxPool, ctx: RecordingContext
    ) -> None:
        await pool.exec(ctx, "echo kept > note.txt", timeout_s=10)
        assert await pool.stop_idle(now=1e12) == [ctx.session_id]
        assert ctx.types() == ["sandbox.provisioned", "sandbox.stopped"]
        assert (await pool.exec(ctx, "cat note.txt", timeout_s=10)).stdout == "kept\n"


async def read_then_kill(fifo: Path, sandbox: Sandbox) -> None:
    """Wait until the command is running, then SIGKILL the sandbox from the host."""
    await read_fifo(fifo)
    pid = sandbox.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


class TestBwrapBackend(SandboxContract):
    backend = "bwrap"


class TestUnsafeBackend(SandboxContract):
    backend = "unsafe-subprocess"

    def workspace_prefix(self, ctx: RecordingContext) -> Path:
        return ctx.workspace

    async def test_every_result_warns_that_nothing_was_isolated(self, pool: SandboxPool, ctx: RecordingContext) -> None:
        result = await pool.exec(ctx, "true", timeout_s=10)
        assert any("WITHOUT any sandbox" in note for note in result.notes)
