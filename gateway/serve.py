"""Running the gateway: over HTTP with uvicorn, or over stdio; and ``doctor``.

The HTTP listener is bound before uvicorn starts so that ``--port 0`` works and
the banner prints the port actually in use.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import anyio
import uvicorn

from gateway.config import Config
from gateway.errors import StartupError
from gateway.runtime import Runtime
from vault.errors import MasterKeyError

log = logging.getLogger("keyhand")

LOOP = {"use_uvloop": True}
"""uvloop (libuv) under asyncio: a proxied call is mostly event-loop and socket work, and uvloop does that
in C; with httptools parsing HTTP it takes ~0.4 ms off every call through the gateway (bench/proxy.py)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the slow start-up so a taken port fails at once.

    ``IPPROTO_TCP`` is spelled out: asyncio sets ``TCP_NODELAY`` only on accepted sockets whose
    protocol says TCP, and without it a response written as headers then body waits out the
    client's delayed ACK (~40 ms a call).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror} (use --port to pick another)") from None
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def stdio_command() -> tuple[str, list[str]]:
    """How a client should launch this very installation over stdio (absolute, so no PATH is needed)."""
    script = Path(sys.argv[0]).resolve()
    if script.name == "keyhand" and script.exists():
        return str(script), ["stdio"]
    return sys.executable, ["-m", "gateway.cli", "stdio"]


def banner(rt: Runtime, url: str) -> str:
    admin_key = rt.home / "admin.key"
    command, args = stdio_command()
    desktop = {"mcpServers": {"keyhand": {"command": command, "args": args, "env": {"KEYHAND_HOME": str(rt.home)}}}}
    remote = {
        "mcpServers": {
            "keyhand": {
                "command": "npx",
                "args": ["-y", "mcp-remote", url, "--header", "Authorization: Bearer ${KEYHAND_API_KEY}"],
                "env": {"KEYHAND_API_KEY": "<a key from `keyhand keys create --name desktop`>"},
            }
        }
    }
    lines = [f"keyhand: {n}" for n in rt.notices]
    if not rt.auth_enabled:
        lines.append("keyhand: WARNING: --no-auth: anyone who can reach this address acts as 'local'")
    lines.append(f"keyhand: MCP endpoint {url}")
    if rt.auth_enabled:
        lines.append(f"keyhand: clients send 'Authorization: Bearer <key>'; admin key in {admin_key}")
        lines.append("keyhand: create a key for a client with: keyhand keys create --name NAME")
    lines.append("keyhand: Claude Desktop (claude_desktop_config.json), local stdio:")
    lines.append(json.dumps(desktop, indent=2))
    lines.append("keyhand: or over HTTP through mcp-remote:")
    lines.append(json.dumps(remote, indent=2))
    lines.append("keyhand: serving (Ctrl-C to stop)")
    return "\n".join(lines)


def serve(config: Config, home: Path, *, auth_enabled: bool = True) -> int:
    from gateway.app import create_app

    sock = bind(config.server.host, config.server.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = config.server.public_url or f"http://{shown}:{port}/mcp"

    async def run() -> None:
        async with Runtime.running(config, home, auth_enabled=auth_enabled) as rt:
            print(banner(rt, url), flush=True)
            uv = uvicorn.Config(create_app(rt), log_level="warning", lifespan="on", access_log=False, http="httptools")
            await uvicorn.Server(uv).serve(sockets=[sock])

    try:
        anyio.run(run, backend_options=LOOP)
    except MasterKeyError as exc:  # wrong or missing master key: stop before listening, say what to do
        raise StartupError(f"the vault cannot be opened: {exc}") from None
    return 0


def serve_stdio(config: Config, home: Path, *, session: str | None) -> int:
    """MCP over stdin/stdout; stdout carries only MCP, every log line goes to stderr."""
    from mcp.server.stdio import stdio_server

    from gateway.mcp_server import McpSurface

    async def run() -> None:
        async with Runtime.running(config, home) as rt:
            for notice in rt.notices:
                log.info(notice)
            surface = McpSurface(rt, stdio_session=session)
            async with stdio_server() as (read, write):
                await surface.server.run(read, write, surface.server.create_initialization_options())

    anyio.run(run, backend_options=LOOP)
    return 0


def doctor(config: Config, home: Path) -> int:
    """Check what serving needs here; exit 1 naming what to fix. Chromium is optional (render only)."""
    from tools.sandbox import SandboxUnavailable, Viability, backend_for

    try:
        sandbox = backend_for(config.sandbox).viability()
    except SandboxUnavailable as exc:
        sandbox = Viability(False, str(exc))
    chromium = Path(config.fetch.render.chromium_path)
    checks = [
        ("python >= 3.11", sys.version_info >= (3, 11), sys.version.split()[0], True),
        (f"sandbox backend {config.sandbox.backend}", sandbox.ok, sandbox.reason or "can run here", True),
        ("home directory writable", _writable(home), str(home), True),
        ("chromium (web_fetch render)", chromium.exists(), f"{chromium} (apt-get install chromium)", False),
    ]
    ok = True
    for name, passed, detail, required in checks:
        print(f"[{'ok' if passed else 'FAIL' if required else 'warn'}] {name}: {detail}")
        ok = ok and (passed or not required)
    for warning in sandbox.warnings:
        print(f"[warn] sandbox: {warning}")
    return 0 if ok else 1


def _writable(home: Path) -> bool:
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        return True
    except OSError:
        return False
