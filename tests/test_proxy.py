"""The credential proxy: an agent calls an upstream tool; Keyhand injects the vault token, scrubs, logs.

Upstreams here are real MCP servers (tests/upstream_server.py over Streamable HTTP and
over stdio); the secret goes into the vault through `keyhand vault add` (stdin).
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from tests.conftest import Gateway, StartGateway, text_of
from tests.proxy_helpers import SECRET, Upstream, add_secret, stdio_upstream_command

pytestmark = pytest.mark.anyio

ALLOW_TRACKER = {"default": {"tools": {"tracker__*": "allow"}}}


def tracker_config(url: str, **extra: Any) -> dict[str, Any]:
    return {"upstreams": [{"name": "tracker", "url": url, "credential": "tracker", **extra}], "agents": ALLOW_TRACKER}


def start_with_alice(start_gateway: StartGateway, config: dict[str, Any]) -> tuple[Gateway, str]:
    keys: dict[str, str] = {}

    def prepare(gw: Gateway) -> None:
        add_secret(gw, "tracker", SECRET)
        keys["alice"] = gw.create_key("alice")

    gw = start_gateway(config, prepare=prepare)
    return gw, keys["alice"]


def secret_forms(secret: str) -> list[str]:
    b = secret.encode()
    return [
        secret,
        base64.b64encode(b).decode(),
        base64.urlsafe_b64encode(b).decode().rstrip("="),
        urllib.parse.quote(secret, safe=""),
        b.hex(),
        json.dumps(secret)[1:-1],
    ]


async def test_upstream_tools_appear_prefixed_with_their_schemas_and_annotations(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    async with gw.client(alice) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        echoed = await mcp.call_tool("tracker__echo", {"text": "hello upstream"})
    assert {"tracker__echo", "tracker__whoami", "tracker__leak", "session_events"} <= set(tools)
    assert tools["tracker__echo"].input_schema["properties"]["text"]["type"] == "string"
    assert text_of(echoed) == "hello upstream"


async def test_the_upstream_gets_the_vault_token_and_never_the_key_the_client_used(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    async with gw.client(alice) as mcp:
        result = await mcp.call_tool("tracker__whoami", {})
    assert upstream.received()[-1] == f"Bearer {SECRET}"
    assert alice not in upstream.all_headers()
    assert SECRET not in text_of(result)
    assert "[REDACTED:tracker]" in text_of(result)  # the marker names the credential


async def test_calls_to_an_upstream_reuse_one_connection(start_gateway: StartGateway, upstream: Upstream) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    async with gw.client(alice) as mcp:
        for _ in range(8):
            assert not (await mcp.call_tool("tracker__whoami", {})).is_error
    peers = upstream.peers()
    assert len(peers) == 8 and len(set(peers)) == 1  # one kept-alive TCP connection for every call


async def test_a_leaking_upstream_leaks_nothing_to_the_client_ledger_logs_or_database(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    async with gw.client(alice) as mcp:
        leaked = await mcp.call_tool("tracker__leak", {})
        failed = await mcp.call_tool("tracker__leak_error", {})
        sid = leaked.meta["keyhand/session"]
    client_view = json.dumps(leaked.model_dump(mode="json")) + json.dumps(failed.model_dump(mode="json"))
    assert "[REDACTED:" in text_of(leaked) and failed.is_error
    async with gw.http("admin") as http:
        ledger = (await http.get(f"/v1/sessions/{sid}/events")).text
    gw.stop()
    stored = b"".join(p.read_bytes() for p in Path(gw.home).glob("keyhand.db*"))
    for form in secret_forms(SECRET) + [base64.b64encode(b"user=x;token=" + SECRET.encode() + b";end").decode()[8:40]]:
        assert form not in client_view, form
        assert form not in ledger, form
        assert form not in gw.logs(), form
        assert form.encode() not in stored, form


async def test_an_stdio_upstream_receives_its_secret_as_an_environment_variable(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    record = tmp_path / "stdio.jsonl"
    config = {
        "upstreams": [
            {
                "name": "tracker",
                "command": stdio_upstream_command(),
                "env": {"UPSTREAM_RECORD": str(record)},
                "credential": "tracker",
                "inject": {"env": "UPSTREAM_TOKEN"},
            }
        ],
        "agents": ALLOW_TRACKER,
    }
    gw, alice = start_with_alice(start_gateway, config)
    async with gw.client(alice) as mcp:
        result = await mcp.call_tool("tracker__whoami", {})
        echoed = await mcp.call_tool("tracker__echo", {"text": "over stdio"})
    assert json.loads(record.read_text().splitlines()[-1])["credential"] == SECRET
    assert SECRET not in text_of(result)
    assert text_of(echoed) == "over stdio"


async def test_a_principal_without_a_credential_is_told_how_to_connect_one(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    bob = gw.create_key("bob")
    async with gw.client(alice) as mcp:  # the tool list is fetched once, with the first usable credential
        await mcp.list_tools()
    async with gw.client(bob) as mcp:
        await mcp.list_tools()
        result = await mcp.call_tool("tracker__echo", {"text": "x"})
    assert result.is_error
    assert "keyhand vault add tracker" in text_of(result)
    assert all(SECRET not in c for c in upstream.received())


async def test_an_upstream_list_change_is_announced_to_the_client_and_shows_up_in_the_tool_list(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with gw.client(alice, message_handler=on_message) as mcp:
        assert "tracker__added" not in {t.name for t in (await mcp.list_tools()).tools}
        await mcp.call_tool("tracker__add_tool", {})
        with anyio.fail_after(20):
            await changed.wait()
        assert "tracker__added" in {t.name for t in (await mcp.list_tools()).tools}
        assert text_of(await mcp.call_tool("tracker__added", {})) == "added works"


async def test_upstream_progress_notifications_reach_the_client(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with gw.client(alice) as mcp:
        result = await mcp.call_tool("tracker__slow", {"seconds": 0.2}, progress_callback=on_progress)
    assert text_of(result) == "done"
    assert len(seen) >= 5


async def test_a_cancelled_call_is_cancelled_at_the_upstream_too(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()

    async with gw.client(alice) as mcp:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await mcp.call_tool("tracker__slow", {"seconds": 60}, progress_callback=on_progress)

            tg.start_soon(call)
            with anyio.fail_after(20):
                await started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(20):
            while "cancelled" not in upstream.all_headers():
                await anyio.sleep(0.05)
        assert text_of(await mcp.call_tool("tracker__echo", {"text": "after"})) == "after"


async def test_a_secret_printed_by_a_builtin_tool_is_scrubbed_too(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start_with_alice(start_gateway, tracker_config(upstream.url))
    async with gw.client(alice) as mcp:
        sid = (await mcp.call_tool("session_events", {})).meta["keyhand/session"]
        planted = gw.home / "workspaces" / sid / "leak.txt"  # as if the secret had reached the sandbox somehow
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_text(f"token={SECRET}\n")
        shell = await mcp.call_tool("bash", {"command": "cat leak.txt; cat leak.txt | base64 -w0"})
        read = await mcp.call_tool("read", {"file_path": "leak.txt"})
    for result in (shell, read):
        assert SECRET not in text_of(result)
        assert "[REDACTED:tracker]" in text_of(result)
    assert base64.b64encode(f"token={SECRET}\n".encode()).decode()[8:40] not in text_of(shell)
