"""The bubblewrap backend: one long-lived, namespaced, seccomp-filtered sandbox per session.

What a sandbox sees (everything else is absent): a read-only ``/usr`` and the
top-level ``/bin``, ``/lib*`` links, a few read-only files of ``/etc`` that programs
need to run (generated ``passwd``/``group``/``hosts``), a fresh ``/proc`` and ``/dev``,
size-capped tmpfs ``/tmp`` and ``/dev/shm``, and the session's workspace read-write at
``/workspace`` (those three are the only writable places: bwrap's own root is
remounted read-only). It runs in new user, mount, PID, IPC, UTS, cgroup and network
namespaces (no network: only its own loopback), as uid/gid 1000, in a new session
(no TIOCSTI into the gateway's terminal), with all capabilities dropped, nested user
namespaces disabled and the filter of :mod:`tools.sandbox.seccomp`. Its first process
is :mod:`tools.sandbox.supervisor`; ``--die-with-parent`` takes the whole tree down
with the gateway. Limits: rlimits always; a cgroup where writable (see
:mod:`tools.sandbox.cgroup`). When the profile allows hosts, the sandbox also gets
its egress (see :mod:`tools.sandbox.egress`): one Unix socket to a guard proxy on
the host, the forwarder that serves it on the private loopback, and proxy variables.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

import anyio

from tools.netguard import Resolver
from tools.sandbox.cgroup import Cgroup, create_cgroup
from tools.sandbox.channel import SupervisorChannel
from tools.sandbox.egress import EGRESS_SOCKET, FORWARDER_PATH, PROXY_ENV, PROXY_PORT, Egress, forwarder_source
from tools.sandbox.protocol import (
    SANDBOX_WORKSPACE,
    EgressRefusal,
    ExecResult,
    SandboxLost,
    SandboxUnavailable,
    Viability,
)
from tools.sandbox.seccomp import UnsupportedArch, build_filter
from tools.sandbox.settings import SandboxSettings

SANDBOX_UID = 1000
SUPERVISOR_PATH = "/run/keyhand/supervisor.py"
PROVISION_TIMEOUT_S = 15.0
# Pieces of the host's /etc that ordinary programs need; nothing with secrets. Keep it narrow: when
# the gateway runs as root, host root is the uid mapped to the sandbox user, so root-only files of
# a bound directory (say /etc/ssl/private) would look like the sandbox's own and be readable.
ETC_FILES = (
    "ld.so.cache ld.so.conf ld.so.conf.d alternatives nsswitch.conf localtime timezone ssl/certs ca-certificates "
    "mime.types inputrc bash.bashrc profile python3 python3.11 python3.12 protocols services"
).split()
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
PASSWD = (
    "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
    f"agent:x:{SANDBOX_UID}:{SANDBOX_UID}:Keyhand sandbox:{SANDBOX_WORKSPACE}:/bin/bash\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = f"root:x:0:\nagent:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"
HOSTS = "127.0.0.1 localhost keyhand\n::1 localhost\n"
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SANDBOX_WORKSPACE,
    "USER": "agent",
    "LOGNAME": "agent",
    "SHELL": "/bin/bash",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "TERM": "dumb",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
}
# The cgroup is joined by a tiny shell before bwrap starts, so every sandbox process is born in it.
_JOIN_CGROUP = 'for f in $KEYHAND_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; exec "$@"'


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def supervisor_source() -> bytes:
    return resources.files("tools.sandbox").joinpath("supervisor.py").read_bytes()


class BwrapBackend:
    """Creates :class:`BwrapSandbox` es; viable where bubblewrap and user namespaces work.

    ``resolver`` is what the egress guard resolves allowed names with (tests map names to 127.0.0.1).
    """

    name = "bwrap"

    def __init__(self, settings: SandboxSettings, *, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.resolver = resolver
        self._verdict: Viability | None = None

    def viability(self) -> Viability:
        """Checked once per backend (it spawns a probe sandbox), then remembered."""
        if self._verdict is None:
            self._verdict = self._check()
        return self._verdict

    def _check(self) -> Viability:
        bwrap = shutil.which(self.settings.bwrap_path)
        if bwrap is None:
            return Viability(
                False, "bubblewrap is not installed: apt-get install bubblewrap (or dnf install bubblewrap)"
            )
        if not os.access(self.settings.python_path, os.X_OK):
            return Viability(
                False, f"{self.settings.python_path} is missing; the sandbox supervisor needs python3 there"
            )
        try:
            build_filter()
        except UnsupportedArch as exc:
            return Viability(False, str(exc))
        probe = subprocess.run(
            [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--disable-userns", "--ro-bind", "/", "/",
             "--", "/bin/true"],
            capture_output=True, text=True, timeout=10, env={},
        )  # fmt: skip
        if probe.returncode != 0:
            return Viability(
                False,
                f"bubblewrap cannot create namespaces here ({probe.stderr.strip()}); enable unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)",
            )
        warnings: tuple[str, ...] = ()
        if os.geteuid() == 0:
            warnings = (
                "the gateway runs as root: RLIMIT_NPROC is not enforced for root, only a pids cgroup stops fork bombs",
            )
        return Viability(True, warnings=warnings)

    async def provision(self, session_id: str, workspace: Path) -> BwrapSandbox:
        verdict = self.viability()
        if not verdict.ok:
            raise SandboxUnavailable(verdict.reason)
        sandbox = BwrapSandbox(self.settings, session_id, workspace, resolver=self.resolver)
        await sandbox.start()
        return sandbox


class BwrapSandbox:
    """One running bubblewrap sandbox (see the module docstring for what it isolates)."""

    def __init__(
        self, settings: SandboxSettings, session_id: str, workspace: Path, *, resolver: Resolver | None = None
    ) -> None:
        self.settings = settings
        self.session_id = session_id
        self._workspace = workspace
        self._resolver = resolver
        self.cgroup: Cgroup | None = None
        self.egress: Egress | None = None
        self._channel: SupervisorChannel | None = None
        self.provision_s = 0.0

    @property
    def workspace(self) -> Path:
        return self._workspace

    @property
    def pid(self) -> int | None:
        """Host pid of the outer bwrap process (killing it takes the whole sandbox down)."""
        return self._channel.process.pid if self._channel else None

    async def start(self) -> None:
        """Start egress (if hosts are allowed), then bwrap; on any failure, destroy what was started."""
        started = time.monotonic()
        try:
            if self.settings.network.allow_hosts:
                self.egress = await Egress.open(self.settings.network, self._resolver)
            await self._launch()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.destroy()
            raise
        self.provision_s = time.monotonic() - started

    async def _launch(self) -> None:
        limits = self.settings.limits
        self.cgroup = create_cgroup(
            f"keyhand-{uuid.uuid4().hex[:12]}", pids=limits.pids, memory_bytes=limits.memory_mb << 20
        )
        fds = self._fds()
        # Options go through --args so the sandbox's PID 1 cmdline does not reveal host paths.
        fds["args"] = _memfd("keyhand-bwrap-args", b"".join(a.encode() + b"\0" for a in self._options(fds)))
        try:
            process = await anyio.open_process(
                self._command(fds["args"]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,  # read only when the sandbox dies (see SupervisorChannel)
                pass_fds=tuple(fds.values()),
                env={"KEYHAND_CGROUP_PROCS": " ".join(self.cgroup.procs_files)} if self.cgroup else {},
                start_new_session=True,
            )
        finally:
            for fd in fds.values():
                os.close(fd)
        self._channel = SupervisorChannel(process)
        await self._channel.ready(PROVISION_TIMEOUT_S)

    def _fds(self) -> dict[str, int]:
        fds = {
            "seccomp": _memfd("keyhand-seccomp", build_filter()),
            "supervisor": _memfd("keyhand-supervisor", supervisor_source()),
            "passwd": _memfd("passwd", PASSWD.encode()),
            "group": _memfd("group", GROUP.encode()),
            "hosts": _memfd("hosts", HOSTS.encode()),
        }
        if self.egress is not None:
            fds["forwarder"] = _memfd("keyhand-forwarder", forwarder_source())
        return fds

    def _supervisor_config(self) -> dict[str, object]:
        return {
            "workspace": SANDBOX_WORKSPACE,
            "pidns": True,
            "output_bytes": self.settings.limits.output_bytes,
            "limits": self.settings.limits.model_dump(
                include={"cpu_s", "memory_mb", "pids", "file_size_mb", "open_files"}
            ),
            "egress": {"port": PROXY_PORT, "socket": EGRESS_SOCKET, "script": FORWARDER_PATH} if self.egress else None,
        }

    def _options(self, fds: dict[str, int]) -> list[str]:
        egress = self.egress.socket_path if self.egress else None
        args = [*namespace_args(), *filesystem_args(self.settings, fds, self._workspace, egress)]
        return [*args, "--seccomp", str(fds["seccomp"]), "--chdir", SANDBOX_WORKSPACE]

    def _command(self, args_fd: int) -> list[str]:
        bwrap = shutil.which(self.settings.bwrap_path) or self.settings.bwrap_path
        command = [bwrap, "--args", str(args_fd), "--", self.settings.python_path, "-I", "-S", "-B", SUPERVISOR_PATH]
        command.append(json.dumps(self._supervisor_config()))
        return ["/bin/sh", "-c", _JOIN_CGROUP, "sh", *command] if self.cgroup else command

    async def exec(self, command: str, *, timeout_s: float, restart: bool = False) -> ExecResult:
        if self._channel is None:
            raise SandboxLost("the sandbox was never started")
        ooms = self.cgroup.oom_kills() if self.cgroup else 0
        result = await self._channel.exec(command, timeout_s=timeout_s, restart=restart)
        if self.cgroup and self.cgroup.oom_kills() > ooms:
            result.notes.append(f"a process was killed by the memory limit ({self.settings.limits.memory_mb} MiB)")
        return result

    async def alive(self) -> bool:
        return self._channel is not None and self._channel.process.returncode is None and await self._channel.ping()

    async def destroy(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self.cgroup is not None:
            await _remove_cgroup(self.cgroup)
        if self.egress is not None:
            await self.egress.close()

    def take_egress_refusals(self) -> list[EgressRefusal]:
        return self.egress.take_refusals() if self.egress else []


def namespace_args() -> list[str]:
    return [
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "keyhand", "--disable-userns",
        "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
    ]  # fmt: skip


def filesystem_args(
    settings: SandboxSettings, fds: dict[str, int], workspace: Path, egress: Path | None = None
) -> list[str]:
    """The mounts and environment; with ``egress`` (the host side of its socket) the egress pieces too."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in TOP_LEVEL:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts"):
        args += ["--perms", "0644", "--ro-bind-data", str(fds[name]), f"/etc/{name}"]
    args += ["--perms", "0644", "--ro-bind-data", str(fds["supervisor"]), SUPERVISOR_PATH]
    tmp_size = str(settings.limits.tmp_size_mb << 20)
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", tmp_size, "--tmpfs", "/dev/shm"]
    args += ["--perms", "1777", "--size", tmp_size, "--tmpfs", "/tmp"]
    args += ["--bind", str(workspace), SANDBOX_WORKSPACE]
    if egress is not None:
        args += ["--bind", str(egress), EGRESS_SOCKET]
        args += ["--perms", "0644", "--ro-bind-data", str(fds["forwarder"]), FORWARDER_PATH]
    # bwrap's root and /dev are tmpfs it made writable; seal them (device nodes stay usable).
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    for key, value in {**SANDBOX_ENV, **(PROXY_ENV if egress is not None else {})}.items():
        args += ["--setenv", key, value]
    return args


async def _remove_cgroup(cgroup: Cgroup) -> None:
    """rmdir succeeds once the kernel has reaped every process; poll briefly, then give up."""
    with anyio.move_on_after(2.0):
        while any(Path(p).read_text().strip() for p in cgroup.procs_files if Path(p).exists()):
            await anyio.sleep(0.01)
    cgroup.remove()
