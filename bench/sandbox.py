"""Sandbox benchmark: provision time and the ``bash`` round trip against a bare bubblewrap spawn.

    .venv/bin/python bench/sandbox.py [--rounds 40]

Measured at the Tool level (``SandboxPool`` + ``bash`` tool, no MCP endpoint, no ledger):
the MCP round trip adds the gateway's HTTP and pipeline time on top. All three series
are interleaved in one run so that the machine's noise hits them alike:

- ``bare``: ``bwrap`` with the same namespace and filesystem options as a sandbox, running
  ``/bin/true`` (fork + namespaces + mounts + exec + exit), as a subprocess.
- ``provision``: a fresh sandbox (cgroup where writable, bwrap, supervisor, bash) until it
  answers, then destroyed.
- ``bash true``: one ``bash`` tool call running ``true`` in a warm sandbox.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from tools.sandbox.bwrap import GROUP, HOSTS, PASSWD, BwrapBackend, _memfd, filesystem_args, namespace_args
from tools.sandbox.pool import SandboxPool
from tools.sandbox.settings import SandboxSettings
from tools.shell import bash_tool


class BenchContext:
    def __init__(self, session_id: str, workspace: Path) -> None:
        self.session_id, self.workspace = session_id, workspace

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        pass

    async def read_events(self, **_: Any) -> list[dict[str, Any]]:
        return []

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        pass


def bare_spawn(settings: SandboxSettings, workspace: Path) -> float:
    fds = {name: _memfd(name, data.encode()) for name, data in (("passwd", PASSWD), ("group", GROUP), ("hosts", HOSTS))}
    fds["supervisor"] = _memfd("supervisor", b"")
    bwrap = shutil.which(settings.bwrap_path) or "bwrap"
    cmd = [bwrap, *namespace_args(), *filesystem_args(settings, fds, workspace), "--", "/bin/true"]
    started = time.perf_counter()
    subprocess.run(cmd, pass_fds=tuple(fds.values()), check=True, env={})
    elapsed = time.perf_counter() - started
    for fd in fds.values():
        os.close(fd)
    return elapsed


async def main(rounds: int) -> None:
    settings = SandboxSettings()
    root = Path(tempfile.mkdtemp(prefix="keyhand-bench-"))
    backend = BwrapBackend(settings)
    pool = SandboxPool(settings, root, backend=backend)
    bash = bash_tool(pool)
    warm = BenchContext("warm", root / "warm")
    await bash.call(warm, {"command": "true"})
    bare: list[float] = []
    provision: list[float] = []
    rtt: list[float] = []
    for i in range(rounds):
        bare.append(bare_spawn(settings, root / "warm"))
        workspace = root / f"p{i}"
        workspace.mkdir()
        started = time.perf_counter()
        sandbox = await backend.provision(f"p{i}", workspace)
        provision.append(time.perf_counter() - started)
        await sandbox.destroy()
        for _ in range(5):
            started = time.perf_counter()
            await bash.call(warm, {"command": "true"})
            rtt.append(time.perf_counter() - started)
    await pool.close()
    shutil.rmtree(root, ignore_errors=True)
    report(bare, provision, rtt)


def report(bare: list[float], provision: list[float], rtt: list[float]) -> None:
    def ms(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[int(q) - 1] * 1000 if q != 50 else statistics.median(xs) * 1000

    b50 = ms(bare, 50)
    print("| measure | p50 ms | p90 ms | ratio to bare p50 | goal |")
    print("|---|---|---|---|---|")
    print(f"| bare `bwrap ... /bin/true` spawn ({len(bare)}) | {b50:.2f} | {ms(bare, 90):.2f} | 1.00 | |")
    p50 = ms(provision, 50)
    print(f"| provision ({len(provision)}) | {p50:.2f} | {ms(provision, 90):.2f} | {p50 / b50:.2f} | < 50 ms |")
    r50 = ms(rtt, 50)
    print(
        f"| `bash true` round trip, Tool level ({len(rtt)}) | {r50:.2f} | {ms(rtt, 90):.2f} | {r50 / b50:.2f} | <= 3x |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    anyio.run(main, parser.parse_args().rounds)
