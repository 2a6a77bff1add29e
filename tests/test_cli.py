"""The command line: keys, sessions, stdio, and the refusals that keep a local gateway local."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.conftest import ROOT, Gateway, StartGateway, keyhand_cmd, session_of

pytestmark = pytest.mark.anyio


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYHAND_HOME": str(home)}
    return subprocess.run(keyhand_cmd(*args), capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


def test_keys_create_prints_the_key_alone_and_stores_only_its_hash(tmp_path: Path) -> None:
    created = run(tmp_path, "keys", "create", "--name", "ci")
    key = created.stdout.strip()
    assert created.returncode == 0 and key.startswith("kh_") and "\n" not in key
    listing = run(tmp_path, "keys", "list").stdout
    assert "ci" in listing and key not in listing
    assert key.encode() not in (tmp_path / "keyhand.db").read_bytes()
    assert oct((tmp_path / "admin.key").stat().st_mode & 0o777) == "0o600"


def test_no_auth_is_refused_unless_the_gateway_listens_on_loopback(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--no-auth", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_a_bad_config_file_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  prot: 1\n")
    result = run(tmp_path, "--config", str(cfg), "serve")
    assert result.returncode == 2
    assert "server.prot" in result.stderr


async def test_no_auth_mode_serves_everyone_as_the_local_principal_and_warns(start_gateway: StartGateway) -> None:
    gw = start_gateway(no_auth=True)
    assert any("WARNING" in line and "--no-auth" in line for line in gw.banner)
    async with gw.client(key=None) as mcp:
        result = await mcp.call_tool("session_events", {})
    async with gw.http(key=None) as http:
        session = (await http.get(f"/v1/sessions/{session_of(result)}")).json()
    assert session["principal"] == "local"


def test_serve_prints_the_mcp_url_and_a_claude_desktop_snippet(gateway: Gateway) -> None:
    text = "".join(gateway.banner)
    assert gateway.url in text
    assert "admin.key" in text
    assert '"mcpServers"' in text


async def test_sessions_commands_show_export_and_list_what_the_ledger_holds(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        sid = session_of(await mcp.call_tool("session_events", {}))
    exported = [json.loads(line) for line in gateway.cli("sessions", "export", sid).stdout.splitlines()]
    assert [e["seq"] for e in exported] == list(range(1, len(exported) + 1))
    assert exported[0]["type"] == "session.created"
    assert sid in gateway.cli("sessions", "list").stdout
    assert "tool.call" in gateway.cli("sessions", "show", sid).stdout
    assert gateway.cli("sessions", "show", "ses_nope", check=False).returncode == 1


async def test_stdio_serves_the_same_tools_and_keeps_stdout_for_mcp(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "gateway.cli", "stdio"],
        env={**os.environ, "KEYHAND_HOME": str(tmp_path)},
        cwd=str(ROOT),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
        await mcp.initialize()
        names = [t.name for t in (await mcp.list_tools()).tools]
        first = await mcp.call_tool("session_events", {})
        second = await mcp.call_tool("session_events", {})
    assert "session_events" in names
    assert session_of(first) == session_of(second)
    assert not first.is_error


async def test_sessions_tail_follows_new_events_live(gateway: Gateway) -> None:
    async with gateway.http() as http:
        sid = (await http.post("/v1/sessions")).json()["id"]
        tail = subprocess.Popen(
            keyhand_cmd("sessions", "tail", sid), stdout=subprocess.PIPE, text=True, env=gateway.env, cwd=ROOT
        )
        try:
            assert tail.stdout is not None
            assert json.loads(tail.stdout.readline())["type"] == "session.created"
            await http.post(f"/v1/sessions/{sid}/events", json={"type": "user.message", "data": {"text": "live"}})
            with anyio.fail_after(10):
                line = await anyio.to_thread.run_sync(tail.stdout.readline)
        finally:
            tail.terminate()
            tail.wait(timeout=10)
            if tail.stdout:
                tail.stdout.close()
    event = json.loads(line)
    assert (event["seq"], event["type"], event["data"]["text"]) == (2, "user.message", "live")


def test_doctor_checks_the_sandbox_backend_for_real(tmp_path: Path) -> None:
    ok = run(tmp_path, "doctor")
    assert ok.returncode == 0 and "[ok] sandbox backend bwrap" in ok.stdout
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("sandbox:\n  bwrap_path: /nonexistent/bwrap\n")
    broken = run(tmp_path, "--config", str(cfg), "doctor")
    assert broken.returncode == 1
    assert "[FAIL] sandbox backend bwrap" in broken.stdout and "bubblewrap" in broken.stdout


def test_serve_refuses_to_start_without_bubblewrap_and_says_how_to_install_it(tmp_path: Path) -> None:
    cfg = tmp_path / "nobwrap.yaml"
    cfg.write_text("sandbox:\n  bwrap_path: /nonexistent/bwrap\n")
    result = run(tmp_path, "--config", str(cfg), "serve", "--port", "0")
    assert result.returncode == 2
    assert "apt-get install bubblewrap" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_claude_desktop_snippet_serve_prints_launches_a_working_stdio_server(gateway: Gateway) -> None:
    text = "".join(gateway.banner)
    snippet = text.split("local stdio:\n", 1)[1].split("keyhand: or over HTTP", 1)[0]
    server = json.loads(snippet)["mcpServers"]["keyhand"]
    params = StdioServerParameters(command=server["command"], args=server["args"], env=server["env"])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
        await mcp.initialize()
        assert "session_events" in {t.name for t in (await mcp.list_tools()).tools}
