"""The supervisor: the first process of every sandbox (stdlib only, run by the sandbox's python3).

It talks to the gateway over its stdin/stdout, one JSON object per line, and runs
commands in a persistent ``bash`` so ``cd``, exported variables and background jobs
survive between calls. Each command is sourced from a file with its stdout and stderr
redirected to files in ``<workspace>/.keyhand/run``; bash writes the exit status to a
private pipe. When a command must be stopped (timeout, cancel, restart) the whole
process tree goes: inside a PID namespace with ``kill(-1, SIGKILL)`` (everything but
this supervisor and bubblewrap's init), otherwise (the unsafe backend) the shell's
process group and every descendant found in ``/proc``. Then a fresh shell starts.

With ``cfg["egress"]`` (the profile allows hosts) it also binds the sandbox's
loopback proxy port and keeps :mod:`tools.sandbox.forwarder` serving it: restarted
whenever it is found dead, since stopping a command kills every process but ours.

Requests: ``{"op": "exec", "command": str, "timeout": float, "restart": bool}``,
``{"op": "ping"}``; while a command runs, ``{"op": "cancel"}``. Every request gets
exactly one reply; the first line written is ``{"ready": true}``.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Any

_RLIMITS = {
    "cpu_s": (resource.RLIMIT_CPU, 1),
    "memory_mb": (resource.RLIMIT_AS, 1 << 20),
    "pids": (resource.RLIMIT_NPROC, 1),
    "file_size_mb": (resource.RLIMIT_FSIZE, 1 << 20),
    "open_files": (resource.RLIMIT_NOFILE, 1),
}


class Shell:
    """One bash process plus the read end of its status pipe."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        read_end, write_end = os.pipe()
        self.status, self.status_fd = read_end, write_end  # the shell writes exit statuses to its write_end
        limits: dict[str, int] = cfg["limits"]

        def setup() -> None:  # runs in the child between fork and exec
            for key, (which, unit) in _RLIMITS.items():
                if limits.get(key):
                    value = limits[key] * unit
                    resource.setrlimit(which, (value, value))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        self.proc = subprocess.Popen(
            ["/bin/bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cfg["workspace"],
            start_new_session=True,
            pass_fds=(write_end,),
            preexec_fn=setup,
        )
        os.close(write_end)

    def send(self, script: str, out: str, err: str) -> None:
        fd = self.status_fd  # closed for the command itself, so only the shell can write a status
        script, out, err = shlex.quote(script), shlex.quote(out), shlex.quote(err)
        line = f"{{ . {script}; }} </dev/null >{out} 2>{err} {fd}>&-; printf '%d\\n' $? >&{fd}\n"
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        os.close(self.status)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass


class Forwarder:
    """The egress forwarder process and the listening socket it serves, which outlives it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.listener = socket.create_server(("127.0.0.1", int(cfg["port"])), backlog=128)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ensure()

    def ensure(self) -> None:
        """Start the forwarder unless it is running."""
        if self.proc is not None and self.proc.poll() is None:
            return
        fd = self.listener.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", self.cfg["script"], str(fd), self.cfg["socket"]],
            stdin=subprocess.DEVNULL,  # never the gateway's pipes: they must close when we do
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(fd,),
            start_new_session=True,
        )


def kill_tree(cfg: dict[str, Any], shell: Shell) -> None:
    """SIGKILL every process the sandbox's commands started, and reap them before returning."""
    if cfg["pidns"] and os.getpid() == 2:  # PID 1 is bubblewrap's init; -1 spares it and us
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # until only init and we are left (killed ones must be reaped too)
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap_nohang()
            if not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]:
                break
            time.sleep(0.005)
    else:  # we are a child subreaper, so orphaned (daemonised) processes are still our descendants
        for _ in range(3):
            for pid in _descendants(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    shell.proc.wait()
    shell.close()
    if not cfg["pidns"]:
        _reap_all()


def _reap_nohang() -> None:
    """Collect our own dead children without blocking (orphans are init's to reap)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reap_all() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans of our commands are re-parented to us, not to init."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def read_capped(path: str, budget: int) -> tuple[bytes, int]:
    """The first ``budget`` bytes of ``path`` and its full size."""
    try:
        with open(path, "rb") as f:
            data = f.read(budget)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return b"", 0
    return data, size


class Requests:
    """JSON lines from the gateway on fd 0, unbuffered so that ``select`` sees every pending byte."""

    def __init__(self) -> None:
        self.fd = 0
        self.buf = b""

    def pending(self) -> bool:
        return b"\n" in self.buf

    def read_one(self) -> dict[str, Any] | None:
        """The next request (blocking), or None at end of input."""
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        parsed: dict[str, Any] = json.loads(line)
        return parsed


class Supervisor:
    def __init__(self, cfg: dict[str, Any], requests: Requests) -> None:
        self.cfg = cfg
        self.requests = requests
        self.run_dir = os.path.join(cfg["workspace"], ".keyhand", "run")
        self.out_dir = os.path.join(cfg["workspace"], ".keyhand", "output")
        os.makedirs(self.run_dir, exist_ok=True)
        self.shell = Shell(cfg)
        self.forwarder = Forwarder(cfg["egress"]) if cfg.get("egress") else None
        self.counter = 0

    def restart_shell(self) -> None:
        kill_tree(self.cfg, self.shell)
        self.shell = Shell(self.cfg)
        if self.forwarder is not None:
            self.forwarder.ensure()

    def execute(self, req: dict[str, Any]) -> dict[str, Any]:
        restarted = bool(req.get("restart")) or self.shell.proc.poll() is not None  # e.g. OOM-killed meanwhile
        if restarted:
            self.restart_shell()
        elif self.forwarder is not None:
            self.forwarder.ensure()  # a command may have killed it
        self.counter += 1
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{self.counter}-{os.urandom(3).hex()}"
        os.makedirs(self.run_dir, exist_ok=True)  # the command may have removed it last time
        script = os.path.join(self.run_dir, f"{stamp}.sh")
        out, err = script[:-3] + ".stdout", script[:-3] + ".stderr"
        with open(script, "w") as f:
            f.write(req["command"] + "\n")
        started = time.monotonic()
        self.shell.send(script, out, err)
        status, outcome = self.wait(started + float(req["timeout"]))
        reply = {
            "exit_code": status,
            "timed_out": outcome == "timeout",
            "cancelled": outcome == "cancel",
            "shell_restarted": restarted or outcome != "done",
            "duration_s": time.monotonic() - started,
        }
        if outcome != "done":
            self.restart_shell()
        reply.update(self.collect(stamp, out, err))
        _unlink(script)
        return reply

    def wait(self, deadline: float) -> tuple[int | None, str]:
        """Block until the command's status arrives, the deadline passes or the gateway cancels."""
        buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, "timeout"
            ready, _, _ = select.select([self.shell.status, self.requests.fd], [], [], remaining)
            if self.requests.fd in ready or self.requests.pending():
                req = self.requests.read_one()
                if req is None or req.get("op") == "cancel":
                    return None, "cancel"
            if self.shell.status in ready:
                chunk = os.read(self.shell.status, 64)
                if not chunk:  # the shell exited (``exit`` in the command)
                    code = self.shell.proc.wait()
                    return (code if code >= 0 else 128 - code), "exited"
                buf += chunk
                if buf.endswith(b"\n"):
                    return int(buf.split()[-1]), "done"

    def collect(self, stamp: str, out: str, err: str) -> dict[str, Any]:
        """Read both streams within the output budget; spill whole files that exceed it."""
        cap = int(self.cfg["output_bytes"])
        err_data, err_size = read_capped(err, cap // 2)
        out_data, out_size = read_capped(out, cap - len(err_data))
        if len(err_data) < err_size and len(out_data) == out_size:
            err_data, _ = read_capped(err, cap - len(out_data))
        files = []
        try:
            os.makedirs(self.out_dir, exist_ok=True)
        except OSError:
            pass
        for path, data, size, name in ((out, out_data, out_size, "stdout"), (err, err_data, err_size, "stderr")):
            if len(data) < size:
                target = os.path.join(self.out_dir, f"{stamp}.{name}.txt")
                try:
                    os.replace(path, target)
                    files.append(target)
                except OSError:
                    pass  # the command removed or replaced it: nothing to point at
            else:
                _unlink(path)
        return {
            "stdout": out_data.decode("utf-8", "replace"),
            "stderr": err_data.decode("utf-8", "replace"),
            "truncated": bool(files),
            "output_files": files,
        }


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def main() -> None:
    cfg = json.loads(sys.argv[1])
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if not cfg["pidns"]:
        become_subreaper()
    requests = Requests()
    sup = Supervisor(cfg, requests)
    reply(ready=True, pid=os.getpid())
    while (req := requests.read_one()) is not None:
        if req.get("op") == "exec":
            reply(**sup.execute(req))
        elif req.get("op") == "cancel":
            reply(ok=True, idle=True)
        else:
            reply(ok=True)
    kill_tree(cfg, sup.shell)  # the gateway closed the pipe: take every command down with us


def reply(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
