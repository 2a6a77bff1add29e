"""Proxy benchmark: the latency Keyhand adds to a call of a trivial upstream tool, and calls/s.

    .venv/bin/python bench/proxy.py [--calls 400] [--concurrency 50 --per-session 4]

Starts the shared peer-bench upstream (``../shared/peer-bench/upstream_echo.py``, an
``echo`` tool over Streamable HTTP) and ``keyhand serve`` in front of it with a vault
credential injected into every upstream call (the full pipeline: ledger, policy,
credential, redaction), then runs peer-bench's ``latency.py`` against both:
``direct`` (client -> upstream) and ``keyhand`` (client -> keyhand -> upstream), calls
interleaved in one run. Prints latency.py's Markdown tables; stops what it started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import yaml

ROOT = Path(__file__).resolve().parent.parent
PEER_BENCH = ROOT.parent / "shared" / "peer-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--per-session", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "KEYHAND_HOME": str(home)}
        up_port, kh_port, fw_port = free_port(), free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}/mcp"
        config = {
            "upstreams": [{"name": "echo", "url": upstream, "credential": "echo-token"}],
            "agents": {"default": {"tools": {"echo__*": "allow"}}},
        }
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        keyhand = [sys.executable, "-m", "gateway.cli", "--config", str(cfg), "--log-level", "WARNING"]
        subprocess.run([*keyhand, "vault", "add", "echo-token", "--kind", "bearer"], input=secrets.token_urlsafe(24),
                       text=True, env=env, cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            procs.append(subprocess.Popen([sys.executable, str(PEER_BENCH / "upstream_echo.py"), "--port",
                                           str(up_port)], cwd=PEER_BENCH))  # fmt: skip
            procs.append(subprocess.Popen([*keyhand, "serve", "--port", str(kh_port)], env=env, cwd=ROOT,
                                          stdout=subprocess.DEVNULL))  # fmt: skip
            wait_http(upstream)
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "forwarder.py"), "--upstream", upstream,
                                           "--port", str(fw_port)]))  # fmt: skip
            wait_http(f"http://127.0.0.1:{fw_port}/mcp")
            wait_http(f"http://127.0.0.1:{kh_port}/healthz")
            key = (home / "admin.key").read_text().strip()
            subprocess.run(
                [sys.executable, str(PEER_BENCH / "latency.py"),
                 "--target", f"direct={upstream}", "--target", f"sdk-forwarder=http://127.0.0.1:{fw_port}/mcp",
                 "--target", f"keyhand=http://127.0.0.1:{kh_port}/mcp",
                 "--tool", "keyhand=echo__echo", "--token-env", "keyhand=KEYHAND_BENCH_KEY", "--mode", "legacy",
                 "--calls", str(args.calls), "--concurrency", str(args.concurrency),
                 "--per-session", str(args.per_session), "--rounds", str(args.rounds)],
                env={**os.environ, "KEYHAND_BENCH_KEY": key}, check=True,
            )  # fmt: skip
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=15)


if __name__ == "__main__":
    main()
