"""Fixtures that start the real gateway (``keyhand serve``) on 127.0.0.1 and talk to it.

``start_gateway(config=..., no_auth=...)`` starts a fresh gateway process with its
own ``KEYHAND_HOME`` on a free port, waits for ``/healthz`` and stops it after the
test. ``gateway`` is one shared default gateway for tests that only need one.
Clients are the official MCP SDK client over Streamable HTTP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.proxy_helpers", "tests.web_servers"]  # `upstream`; `site` and `sink`
START_TIMEOUT_S = 30.0


def keyhand_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


@dataclass
class Gateway:
    home: Path
    config_path: Path | None
    no_auth: bool = False
    proc: subprocess.Popen[str] | None = None
    base: str = ""
    banner: list[str] = field(default_factory=list)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    @property
    def admin_key(self) -> str:
        return (self.home / "admin.key").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KEYHAND_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        cfg = ["--config", str(self.config_path)] if self.config_path else []
        return subprocess.run(
            keyhand_cmd(*cfg, *args),
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            check=check,
            timeout=60,
            cwd=ROOT,
        )

    def create_key(self, name: str, *, admin: bool = False, profile: str = "default") -> str:
        extra = ["--admin"] if admin else []
        return self.cli("keys", "create", "--name", name, "--profile", profile, *extra).stdout.strip()

    def start(self, port: int = 0) -> None:
        cfg = ["--config", str(self.config_path)] if self.config_path else []
        args = ["serve", "--port", str(port)] + (["--no-auth"] if self.no_auth else [])
        self.log_path = self.home.parent / f"{self.home.name}-gateway.log"
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                keyhand_cmd(*cfg, *args), stdout=subprocess.PIPE, stderr=log, text=True, env=self.env, cwd=ROOT
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"gateway exited early: {self.logs()}")
            self.banner.append(line)
            if "MCP endpoint " in line:
                self.base = line.split("MCP endpoint ", 1)[1].strip().removesuffix("/mcp")
            if line.startswith("keyhand: serving"):
                break
        self._wait_healthy(deadline)

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if httpx2.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not become healthy: {self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        port = int(self.base.rsplit(":", 1)[1])
        self.stop()
        self.banner.clear()
        self.start(port=port)

    def http(self, key: str | None = "admin", **kwargs: Any) -> httpx2.AsyncClient:
        headers = {"Authorization": f"Bearer {self.admin_key if key == 'admin' else key}"} if key else {}
        return httpx2.AsyncClient(base_url=self.base, headers=headers, timeout=30, **kwargs)

    @contextlib.asynccontextmanager
    async def client(
        self, key: str | None = "admin", *, session: str | None = None, **session_kwargs: Any
    ) -> AsyncIterator[ClientSession]:
        """An initialized MCP ``ClientSession``; ``session`` re-attaches a keyhand session by id."""
        headers: dict[str, str] = {}
        if key:
            headers["Authorization"] = f"Bearer {self.admin_key if key == 'admin' else key}"
        if session:
            headers["Keyhand-Session"] = session
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as http:
            async with streamable_http_client(self.url, http_client=http) as (read, write, *_):
                async with ClientSession(read, write, **session_kwargs) as mcp_session:
                    await mcp_session.initialize()
                    yield mcp_session


StartGateway = Callable[..., Gateway]


@pytest.fixture
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    started: list[Gateway] = []

    def start(
        config: dict[str, Any] | None = None,
        *,
        no_auth: bool = False,
        home: Path | None = None,
        prepare: Callable[[Gateway], None] | None = None,
    ) -> Gateway:
        """Start a gateway; ``prepare(gw)`` runs first (CLI set-up such as `vault add` on the fresh home)."""
        base = tmp_path_factory.mktemp("gw")
        cfg_path = None
        if config is not None:
            cfg_path = base / "config.yaml"
            cfg_path.write_text(yaml.safe_dump(config))
        gw = Gateway(home=home or base / "home", config_path=cfg_path, no_auth=no_auth)
        if prepare is not None:
            prepare(gw)
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("shared-gw")
    gw = Gateway(home=base / "home", config_path=None)
    gw.start()
    yield gw
    gw.stop()


def text_of(result: Any) -> str:
    """The text of an MCP tool result's text blocks."""
    return "\n".join(getattr(block, "text", "") for block in result.content)


def session_of(result: Any) -> str:
    """The keyhand session id a tool result reports."""
    return str(result.meta["keyhand/session"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
