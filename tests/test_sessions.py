"""Sessions outlive connections and restarts, and each principal sees only its own."""

from __future__ import annotations

import httpx2
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import Gateway, StartGateway, session_of

pytestmark = pytest.mark.anyio


async def test_a_new_connection_gets_a_new_session_and_the_header_re_attaches_the_old_one(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        first = session_of(await mcp.call_tool("session_events", {}))
    async with gateway.client() as mcp:
        other = session_of(await mcp.call_tool("session_events", {}))
    async with gateway.client(session=first) as mcp:
        again = await mcp.call_tool("session_events", {"types": ["tool.call"]})
    assert other != first
    assert session_of(again) == first
    assert len(again.structured_content["events"]) == 2  # the first connection's call and this one


async def test_a_session_survives_a_gateway_restart(start_gateway: StartGateway) -> None:
    gw = start_gateway()
    async with gw.client() as mcp:
        sid = session_of(await mcp.call_tool("session_events", {}))
    gw.restart()
    async with gw.client(session=sid) as mcp:
        result = await mcp.call_tool("session_events", {})
    assert session_of(result) == sid
    assert [e["type"] for e in result.structured_content["events"]][:3] == [
        "session.created",
        "tool.call",
        "tool.result",
    ]


async def test_another_principals_session_does_not_exist_for_you(gateway: Gateway) -> None:
    alice, bob = gateway.create_key("alice"), gateway.create_key("bob")
    async with gateway.client(alice) as mcp:
        alices = session_of(await mcp.call_tool("session_events", {}))
    async with gateway.http(bob) as http:
        assert (await http.get(f"/v1/sessions/{alices}")).status_code == 404
        assert (await http.get(f"/v1/sessions/{alices}/events")).status_code == 404
        assert (await http.post(f"/v1/sessions/{alices}/events", json={"type": "user.message"})).status_code == 404
        listed = (await http.get("/v1/sessions")).json()["sessions"]
    assert alices not in [s["id"] for s in listed]
    async with gateway.client(bob, session=alices) as mcp:
        with pytest.raises(MCPError) as err:
            await mcp.call_tool("session_events", {})
    assert err.value.code == types.INVALID_PARAMS
    async with gateway.http("admin") as admin:
        assert (await admin.get(f"/v1/sessions/{alices}")).json()["principal"] == "alice"


async def test_an_unknown_session_id_is_a_clear_error(gateway: Gateway) -> None:
    async with gateway.client(session="ses_doesnotexist") as mcp:
        with pytest.raises(MCPError) as err:
            await mcp.call_tool("session_events", {})
    assert "ses_doesnotexist" in err.value.message
    async with gateway.http() as http:
        response = await http.get("/v1/sessions/ses_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_a_revoked_key_stops_working(gateway: Gateway) -> None:
    key = gateway.create_key("carol")
    async with gateway.http(key) as http:
        assert (await http.get("/v1/sessions")).status_code == 200
    gateway.cli("keys", "revoke", "carol")
    listing = gateway.cli("keys", "list").stdout
    assert "carol" in listing and "revoked" in listing and key not in listing
    async with gateway.http(key) as http:
        for _ in range(100):  # the key cache lives at most 2 s
            status = (await http.get("/v1/sessions")).status_code
            if status == 401:
                break
            import anyio

            await anyio.sleep(0.05)
    assert status == 401


async def test_stateless_2026_clients_without_a_header_land_in_their_own_stable_session(gateway: Gateway) -> None:
    dave, erin = gateway.create_key("dave"), gateway.create_key("erin")

    async def one_call(key: str) -> tuple[str, str]:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(gateway.url, http_client=http), mode="auto") as client:
                result = await client.call_tool("session_events", {})
                return session_of(result), client.protocol_version

    (d1, version), (d2, _), (e1, _) = await one_call(dave), await one_call(dave), await one_call(erin)
    assert version == "2026-07-28"
    assert d1 == d2
    assert e1 != d1
    async with gateway.http(erin) as http:
        assert (await http.get(f"/v1/sessions/{d1}")).status_code == 404


async def test_another_key_cannot_use_an_mcp_connection_it_did_not_open(gateway: Gateway) -> None:
    frank, grace = gateway.create_key("frank"), gateway.create_key("grace")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with gateway.http(frank) as http:
        opened = await http.post("/mcp", json=init, headers=headers)
    connection = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with gateway.http(grace) as http:
        hijack = await http.post("/mcp", json=listing, headers={**headers, "Mcp-Session-Id": connection})
        sse = {"Accept": "text/event-stream", "Mcp-Session-Id": connection}
        async with http.stream("GET", "/mcp", headers=sse) as stream:  # returns once the status line is in
            stream_status = stream.status_code
    assert hijack.status_code == 404
    assert stream_status == 404
