"""A client connects to /mcp, lists tools, reads its ledger, and gets clear errors for bad input."""

from __future__ import annotations

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import Gateway, session_of, text_of

pytestmark = pytest.mark.anyio


async def test_a_client_lists_the_builtin_tools_with_honest_annotations(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
    assert "session_events" in tools
    assert tools["session_events"].annotations is not None
    assert tools["session_events"].annotations.read_only_hint is True


async def test_every_call_is_logged_as_call_then_result_and_readable_with_session_events(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        first = await mcp.call_tool("session_events", {})
        second = await mcp.call_tool("session_events", {"types": ["tool.*"]})
    assert session_of(first) == session_of(second)
    events = second.structured_content["events"]
    assert [e["type"] for e in events] == ["tool.call", "tool.result", "tool.call"]
    assert events[1]["data"]["call_seq"] == events[0]["seq"]
    assert events[1]["data"]["duration_ms"] >= 0
    assert session_of(first) in text_of(first)


async def test_session_events_reads_slices_and_hints_at_the_next_one(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        for _ in range(4):
            await mcp.call_tool("session_events", {"last": 1})
        page = await mcp.call_tool("session_events", {"after": 1, "limit": 2})
        last = await mcp.call_tool("session_events", {"last": 3})
    assert [e["seq"] for e in page.structured_content["events"]] == [2, 3]
    assert '{"after": 3}' in text_of(page)
    seqs = [e["seq"] for e in last.structured_content["events"]]
    assert seqs == sorted(seqs) and len(seqs) == 3


async def test_an_unknown_tool_is_a_protocol_error_and_the_gateway_keeps_serving(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        with pytest.raises(MCPError) as err:
            await mcp.call_tool("no_such_tool", {})
        assert err.value.code == types.INVALID_PARAMS
        assert (await mcp.call_tool("session_events", {})).is_error is False


async def test_wrong_argument_types_are_a_tool_error_that_names_the_argument(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        result = await mcp.call_tool("session_events", {"limit": "ten"})
        follow = await mcp.call_tool("session_events", {"types": ["tool.error"]})
    assert result.is_error
    assert "limit" in text_of(result)
    assert [e["type"] for e in follow.structured_content["events"]] == ["tool.error"]


async def test_malformed_json_rpc_gets_a_4xx_and_nothing_breaks(gateway: Gateway) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    async with gateway.http() as http:
        broken = await http.post("/mcp", content=b"{not json", headers=headers)
        not_rpc = await http.post("/mcp", json={"hello": "world"}, headers=headers)
        huge = await http.post("/mcp", content=b"x" * (5 * 1024 * 1024), headers=headers)
    assert 400 <= broken.status_code < 500
    assert 400 <= not_rpc.status_code < 500
    assert huge.status_code == 413
    async with gateway.client() as mcp:
        assert (await mcp.call_tool("session_events", {})).is_error is False


async def test_a_request_without_a_valid_key_is_refused_before_anything_happens(gateway: Gateway) -> None:
    async with gateway.http(key=None) as anonymous, gateway.http(key="kh_wrong") as wrong:
        for http in (anonymous, wrong):
            for path in ("/mcp", "/v1/sessions"):
                response = await http.post(path, json={}) if path == "/mcp" else await http.get(path)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_foreign_origin_is_refused_on_the_mcp_endpoint(gateway: Gateway) -> None:
    headers = {"Origin": "http://evil.example", "Accept": "application/json, text/event-stream"}
    async with gateway.http() as http:
        response = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
    assert response.status_code == 403


async def test_a_clients_keyhand_meta_is_recorded_with_the_call(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        await mcp.call_tool("session_events", {}, meta={"keyhand/tool_use_id": "toolu_42", "other": "dropped"})
        result = await mcp.call_tool("session_events", {"types": ["tool.call"]})
    first = result.structured_content["events"][0]["data"]
    assert first["keyhand/tool_use_id"] == "toolu_42"
    assert "other" not in first


async def test_metrics_count_calls_by_tool_and_outcome_for_admins_only(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        await mcp.call_tool("session_events", {})
        await mcp.call_tool("session_events", {"limit": "bad"})
    async with gateway.http() as admin, gateway.http(gateway.create_key("metrics-user")) as user:
        text = (await admin.get("/metrics")).text
        assert (await user.get("/metrics")).status_code == 403
    async with gateway.http(key=None) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    assert 'keyhand_tool_calls_total{tool="session_events",outcome="error"}' in text
    assert 'keyhand_tool_calls_total{tool="session_events",outcome="result"}' in text
