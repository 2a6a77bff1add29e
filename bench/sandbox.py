"""Sandbox benchmark: provision time and the ``bash`` round trip against a bare bubblewrap spawn.

    .venv/bin/python bench/sandbox.py [--rounds 40]

Two levels, each interleaved with bare spawns in the same run so that the machine's
noise hits both sides alike. Tool level: ``SandboxPool`` + ``bash`` tool in this
process. MCP level: a real ``keyhand serve`` on 127.0.0.1 and the official SDK client
(HTTP, auth, the whole pipeline with its ledger writes), with ``session_events`` as the
floor a call pays without any sandbox. Series:

- ``bare``: ``bwrap`` with the same namespace and filesystem options as a sandbox, running
  ``/bin/true`` (fork + namespaces + mounts + exec + exit), as a subprocess.
- ``provision``: a fresh sandbox (cgroup where writable, bwrap, supervisor, bash) until it
  answers, then destroyed.
- ``bash true``: one ``bash`` tool call running ``true`` in a warm sandbox.
- MCP: the first ``bash`` call of a session (provision included), then ``bash true`` warm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

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


ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serving(home: Path) -> Iterator[tuple[str, str]]:
    """``keyhand serve`` with the default config on a free port; yields (MCP URL, admin key)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KEYHAND_HOME": str(home)}
    cmd = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", (home / "admin.key").read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def timed_call(mcp: ClientSession, name: str, args: dict[str, Any]) -> float:
    started = time.perf_counter()
    result = await mcp.call_tool(name, args)
    elapsed = time.perf_counter() - started
    if result.is_error:
        raise SystemExit(f"{name} failed: {result.content}")
    return elapsed


async def mcp_level(rounds: int, settings: SandboxSettings, workspace: Path) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {"bare": [], "first": [], "bash": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="keyhand-bench-") as tmp, serving(Path(tmp) / "home") as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            for _ in range(max(3, rounds // 4)):  # a fresh session each time: the first call provisions
                async with streamable_http_client(url, http_client=http) as (read, write, *_):
                    async with ClientSession(read, write) as mcp:
                        await mcp.initialize()
                        series["first"].append(await timed_call(mcp, "bash", {"command": "true"}))
            async with streamable_http_client(url, http_client=http) as (read, write, *_):
                async with ClientSession(read, write) as mcp:
                    await mcp.initialize()
                    await timed_call(mcp, "bash", {"command": "true"})
                    for _ in range(rounds):
                        series["bare"].append(bare_spawn(settings, workspace))
                        for _ in range(3):
                            series["bash"].append(await timed_call(mcp, "bash", {"command": "true"}))
                            series["floor"].append(await timed_call(mcp, "session_events", {"last": 1}))
    return series


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
    mcp = await mcp_level(rounds, settings, root / "warm")
    shutil.rmtree(root, ignore_errors=True)
    print("| level | measure | p50 ms | p90 ms | ratio to bare p50 | goal |")
    print("|---|---|---|---|---|---|")
    row("Tool", "bare `bwrap ... /bin/true` spawn", bare, bare)
    row("Tool", "provision (fresh sandbox until it answers)", provision, bare, "< 50 ms")
    row("Tool", "`bash true` round trip", rtt, bare, "<= 3x")
    row("MCP", "bare `bwrap ... /bin/true` spawn", mcp["bare"], mcp["bare"])
    row("MCP", "first `bash true` of a session (provision included)", mcp["first"], mcp["bare"])
    row("MCP", "`bash true` round trip", mcp["bash"], mcp["bare"], "<= 3x")
    row("MCP", "`session_events` round trip (no sandbox: the floor)", mcp["floor"], mcp["bare"])


def row(level: str, what: str, xs: list[float], bare: list[float], goal: str = "") -> None:
    def ms(values: list[float], q: int) -> float:
        return (statistics.median(values) if q == 50 else statistics.quantiles(values, n=10)[8]) * 1000

    p50, ratio = ms(xs, 50), ms(xs, 50) / ms(bare, 50)
    print(f"| {level} | {what} ({len(xs)}) | {p50:.2f} | {ms(xs, 90):.2f} | {ratio:.2f} | {goal} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    anyio.run(main, parser.parse_args().rounds)
