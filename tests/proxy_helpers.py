"""Real upstreams for the credential-proxy tests: the SDK test server over HTTP or stdio, started per test."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, Gateway

SECRET = "tok-9f8e7d6c5b4a3f2e1d0c-upstream-SECRET"


@dataclass
class Upstream:
    proc: subprocess.Popen[str]
    url: str
    port: int
    record: Path

    def received(self) -> list[str]:
        if not self.record.exists():
            return []
        return [json.loads(line)["credential"] for line in self.record.read_text().splitlines()]

    def peers(self) -> list[int]:
        """The client port of each recorded call: one per TCP connection Keyhand opened."""
        if not self.record.exists():
            return []
        return [json.loads(line).get("peer") for line in self.record.read_text().splitlines()]

    def all_headers(self) -> str:
        return self.record.read_text() if self.record.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


def start_upstream(record: Path, port: int = 0) -> Upstream:
    env = {"UPSTREAM_RECORD": str(record), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.upstream_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), f"upstream did not start: {line!r}"
    bound = int(line.split()[1])
    return Upstream(proc, f"http://127.0.0.1:{bound}/mcp", bound, record)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = start_upstream(tmp_path / "received.jsonl")
    yield up
    up.stop()


def add_secret(gw: Gateway, name: str, secret: str, owner: str = "alice") -> None:
    gw.cli("vault", "add", name, "--kind", "bearer", "--owner", owner, input=secret)


def stdio_upstream_command() -> list[str]:
    return [sys.executable, "-m", "tests.upstream_server", "--transport", "stdio"]
