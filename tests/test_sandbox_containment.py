"""What code in a bubblewrap sandbox cannot do: see or touch the host, reach the network, escape limits."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from tests.sandbox_helpers import RecordingContext, make_context, small_settings
from tools.base import ToolError
from tools.files import EditTool, GrepTool, ReadTool, WriteTool
from tools.sandbox.bwrap import BwrapSandbox
from tools.sandbox.pool import SandboxPool
from tools.sandbox.seccomp import DENIED, native_arch

pytestmark = pytest.mark.anyio


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake gateway home: a database and an admin key next to the workspaces."""
    home = tmp_path / "home"
    (home / "workspaces").mkdir(parents=True)
    (home / "keyhand.db").write_text("SQLite format 3 LEDGER-ROWS")
    (home / "admin.key").write_text("kh_admin_SECRET-VALUE-0123")
    return home


@pytest.fixture
async def pool(home: Path) -> AsyncIterator[SandboxPool]:
    pool = SandboxPool(small_settings("bwrap"), home / "workspaces")
    yield pool
    await pool.close()


@pytest.fixture
def ctx(home: Path) -> RecordingContext:
    return make_context(home, "alice")


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


async def run(pool: SandboxPool, ctx: RecordingContext, command: str, timeout_s: float = 20) -> str:
    result = await pool.exec(ctx, command, timeout_s=timeout_s)
    return result.stdout + result.stderr


async def test_the_gateway_home_database_and_admin_key_are_invisible(
    pool: SandboxPool, ctx: RecordingContext, home: Path
) -> None:
    out = await run(pool, ctx, f"cat {home}/admin.key {home}/keyhand.db; ls {home}; ls /")
    assert "SECRET-VALUE" not in out and "LEDGER-ROWS" not in out
    assert out.count("No such file or directory") == 3
    found = await run(
        pool, ctx, "find / -path /proc -prune -o -path /usr -prune -o -name '*.key' -print -o -name '*.db' -print"
    )
    assert found == ""


async def test_the_root_holds_only_the_system_the_workspace_and_private_mounts(
    pool: SandboxPool, ctx: RecordingContext
) -> None:
    top = set((await run(pool, ctx, "ls -A /")).split())
    assert top <= {
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "usr",
        "etc",
        "dev",
        "proc",
        "tmp",
        "run",
        "workspace",
    }
    assert {"root", "home", "var", "sys", "work", "opt"}.isdisjoint(top)


async def test_no_secret_of_the_host_system_or_the_gateway_environment_reaches_the_sandbox(
    pool: SandboxPool, ctx: RecordingContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYHAND_TEST_TOKEN", "tok-should-not-leak")
    out = await run(pool, ctx, "env; ls /etc/shadow /etc/ssl/private /root /run/user 2>&1; ls /etc/ssl")
    assert "tok-should-not-leak" not in out and "KEYHAND" not in out
    assert out.count("No such file or directory") == 4 and out.strip().endswith("certs")


async def test_nothing_outside_the_workspace_and_tmp_is_writable(pool: SandboxPool, ctx: RecordingContext) -> None:
    name = f"keyhand-probe-{uuid.uuid4().hex}"
    out = await run(
        pool,
        ctx,
        f"for d in /usr /etc /bin / /run /dev /proc; do touch $d/{name} 2>/dev/null && echo wrote $d; done; "
        f"touch /tmp/{name} /dev/shm/{name} && echo tmp-ok; echo x > /dev/null && echo devnull-ok",
    )
    assert out == "tmp-ok\ndevnull-ok\n"
    assert not (Path("/tmp") / name).exists()  # the sandbox's /tmp is its own tmpfs


async def test_no_network_connection_succeeds(pool: SandboxPool, ctx: RecordingContext, listener: int) -> None:
    script = (
        "import socket\n"
        f"for addr in [('127.0.0.1', {listener}), ('1.1.1.1', 80), ('10.0.0.1', 443)]:\n"
        "    try:\n"
        "        socket.create_connection(addr, timeout=3); print('connected', addr)\n"
        "    except OSError as e:\n"
        "        print('refused', e.errno)\n"
        "print([n for _, n in socket.if_nameindex()])\n"
    )
    out = await run(pool, ctx, f'python3 -c "{script}"')
    assert "connected" not in out and out.count("refused") == 3
    assert out.strip().endswith("['lo']")


async def test_the_sandbox_user_is_unprivileged_with_no_capabilities_and_a_seccomp_filter(
    pool: SandboxPool, ctx: RecordingContext
) -> None:
    out = await run(pool, ctx, "id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status")
    uid, gid, *fields = out.split()
    status = dict(zip(fields[0::2], fields[1::2], strict=True))
    assert uid != "0" and gid != "0"
    assert status == {"CapEff:": "0" * 16, "CapBnd:": "0" * 16, "NoNewPrivs:": "1", "Seccomp:": "2"}


async def test_host_processes_are_not_visible_in_proc(pool: SandboxPool, ctx: RecordingContext) -> None:
    out = await run(pool, ctx, "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done")
    assert "pytest" not in out
    assert len([line for line in out.splitlines() if line.strip()]) < 8


async def test_every_refused_syscall_fails_with_eperm(pool: SandboxPool, ctx: RecordingContext) -> None:
    numbers = native_arch().numbers
    script = SYSCALL_PROBE % json.dumps({name: numbers[name] for name in DENIED})
    (ctx.workspace / "probe.py").write_text(script)
    out = json.loads(await run(pool, ctx, "python3 probe.py"))
    assert {name: out[name] for name in DENIED} == {name: "EPERM" for name in DENIED}
    assert out["ioctl TIOCSTI"] == out["ioctl TIOCLINUX"] == "EPERM"
    assert out["clone NEWUSER"] == "EPERM"
    assert out["clone3"] == "ENOSYS"
    assert out["unshare -U"] != 0


SYSCALL_PROBE = """
import ctypes, errno, json, subprocess
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), "?") if r == -1 else "ALLOWED"
out = {name: call(nr, 0, 0, 0, 0, 0) for name, nr in json.loads('%s').items()}
char = ctypes.c_char(b"x")
nr_ioctl = {"x86_64": 16, "aarch64": 29}[__import__("platform").machine()]
nr_clone = {"x86_64": 56, "aarch64": 220}[__import__("platform").machine()]
out["ioctl TIOCSTI"] = call(nr_ioctl, 2, 0x5412, ctypes.addressof(char))
out["ioctl TIOCLINUX"] = call(nr_ioctl, 2, 0x541C, ctypes.addressof(char))
out["clone NEWUSER"] = call(nr_clone, 0x10000000 | 17, 0, 0, 0, 0)
out["clone3"] = call(435, 0, 0)
out["unshare -U"] = subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode
print(json.dumps(out))
"""


PRIVATE = "diary-a1b2*"
# The bomb's processes outlive the command, so it waits (a builtin read on a FIFO, no fork) until
# they have run into the limit; `restart` then kills the lot.
FORK_BOMB = "mkfifo gate; bomb() { bomb | bomb & }; bomb; read -t 1 <> gate; echo waited"
COUNT_PROCESSES = "n=0; for p in /proc/[0-9]*; do n=$((n + 1)); done; echo $n"


def limits_enforced(sandbox: BwrapSandbox) -> bool:
    """RLIMIT_NPROC binds only non-root users; as root only a pids cgroup holds a fork bomb."""
    return os.geteuid() != 0 or sandbox.cgroup is not None


async def test_a_fork_bomb_is_stopped_by_the_process_limit_and_other_sessions_keep_working(
    pool: SandboxPool, ctx: RecordingContext, home: Path
) -> None:
    await run(pool, ctx, "true")
    sandbox = pool.get_existing(ctx.session_id)
    assert isinstance(sandbox, BwrapSandbox)
    if not limits_enforced(sandbox):
        pytest.skip("running as root without a writable pids cgroup: nothing would stop a fork bomb here")
    other = make_context(home, "bob")
    bombed: list[str] = []

    async def bomb() -> None:
        bombed.append(await run(pool, ctx, FORK_BOMB, 10))

    async with anyio.create_task_group() as tg:
        tg.start_soon(bomb)
        assert await run(pool, other, "echo still here") == "still here\n"
    assert "Resource temporarily unavailable" in bombed[0]
    restarted = await pool.exec(ctx, COUNT_PROCESSES, timeout_s=10, restart=True)
    assert int(restarted.stdout) <= 4  # bwrap's init, the supervisor, the shell: the bomb is gone


async def test_a_memory_bomb_is_killed_and_reported(pool: SandboxPool, ctx: RecordingContext) -> None:
    result = await pool.exec(ctx, "python3 -c 'b = []\nwhile True: b.append(bytearray(32 << 20))'", timeout_s=20)
    assert result.exit_code not in (0, None)
    assert "MemoryError" in result.stderr or result.notes
    assert await run(pool, ctx, "echo alive") == "alive\n"


async def test_processes_that_together_exceed_the_memory_cgroup_are_killed_and_the_result_says_so(
    pool: SandboxPool, ctx: RecordingContext
) -> None:
    await run(pool, ctx, "true")
    sandbox = pool.get_existing(ctx.session_id)
    assert isinstance(sandbox, BwrapSandbox)
    if sandbox.cgroup is None or not sandbox.cgroup.limits_memory:
        pytest.skip("no writable memory cgroup here: only the per-process RLIMIT_AS applies")
    hog = "python3 -c 'import time; b = bytearray(120 << 20); time.sleep(1)'"
    result = await pool.exec(ctx, f"for i in 1 2 3 4; do {hog} & done; wait", timeout_s=20)
    assert "Killed" in result.stderr
    assert result.notes == ["a process was killed by the memory limit (256 MiB)"]


async def test_an_endless_loop_times_out_and_the_shell_comes_back(pool: SandboxPool, ctx: RecordingContext) -> None:
    result = await pool.exec(ctx, "while :; do :; done", timeout_s=1)
    assert result.timed_out and result.shell_restarted
    assert await run(pool, ctx, "echo back") == "back\n"


async def test_ten_megabytes_of_output_are_capped_and_spilled_to_the_workspace(
    home: Path, ctx: RecordingContext
) -> None:
    pool = SandboxPool(small_settings("bwrap", output_bytes=100_000))
    try:
        result = await pool.exec(ctx, "head -c 10000000 /dev/zero | tr '\\0' a", timeout_s=30)
    finally:
        await pool.close()
    assert len(result.stdout.encode()) <= 100_000 and result.truncated
    [spilled] = result.output_files
    assert (ctx.workspace / Path(spilled).relative_to("/workspace")).stat().st_size == 10_000_000


async def test_two_sessions_cannot_see_each_others_workspace(
    pool: SandboxPool, ctx: RecordingContext, home: Path
) -> None:
    await run(pool, ctx, "echo alice-private > diary-a1b2.txt")
    bob = make_context(home, "bob")
    listing = await run(pool, bob, "ls -A /workspace")
    direct = await run(pool, bob, f"cat {ctx.workspace}/diary-a1b2.txt")
    found = await run(pool, bob, f"find / -path /proc -prune -o -path /usr -prune -o -name {PRIVATE!r} -print")
    assert "diary" not in listing and "alice-private" not in direct and found == ""


async def test_links_planted_from_inside_the_sandbox_cannot_steer_the_file_tools_outside(
    pool: SandboxPool, ctx: RecordingContext, home: Path
) -> None:
    key = home / "admin.key"
    await run(pool, ctx, f"ln -s {key} key.txt; ln -s {home} homedir; ln -s / root")
    for tool, args in [
        (ReadTool(), {"file_path": "key.txt"}),
        (ReadTool(), {"file_path": "/workspace/homedir/admin.key"}),
        (EditTool(), {"file_path": "key.txt", "old_string": "kh", "new_string": "pwned"}),
        (WriteTool(), {"file_path": "homedir/admin.key", "content": "pwned"}),
        (WriteTool(), {"file_path": "root/tmp/planted.txt", "content": "pwned"}),
    ]:
        with pytest.raises(ToolError, match="symbolic link"):
            await tool.call(ctx, args)
    grep = await GrepTool().call(ctx, {"pattern": "SECRET"})
    assert key.read_text() == "kh_admin_SECRET-VALUE-0123" and grep.joined_text().startswith("No matches")
