"""Permission policies: upstream tools ask by default, the person answers through elicitation, deny hides."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import Gateway, StartGateway, text_of
from tests.proxy_helpers import SECRET, Upstream, add_secret

pytestmark = pytest.mark.anyio


def answering(approve: bool | None) -> Any:
    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        if approve is None:
            return types.ElicitResult(action="cancel")
        return types.ElicitResult(action="accept", content={"approve": approve})

    return callback


def start(start_gateway: StartGateway, upstream: Upstream, tools: dict[str, str] | None = None) -> tuple[Gateway, str]:
    config: dict[str, Any] = {"upstreams": [{"name": "tracker", "url": upstream.url, "credential": "tracker"}]}
    if tools is not None:
        config["agents"] = {"default": {"tools": tools}}
    keys: dict[str, str] = {}

    def prepare(gw: Gateway) -> None:
        add_secret(gw, "tracker", SECRET)
        keys["alice"] = gw.create_key("alice")

    return start_gateway(config, prepare=prepare), keys["alice"]


async def policy_events(gw: Gateway, sid: str) -> list[tuple[str, Any]]:
    async with gw.http("admin") as http:
        events = (await http.get(f"/v1/sessions/{sid}/events", params={"types": "policy.*"})).json()["events"]
    return [(e["type"], e["data"].get("approved")) for e in events]


async def test_an_upstream_tool_asks_first_and_runs_when_the_person_accepts(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start(start_gateway, upstream)
    async with gw.client(alice, elicitation_callback=answering(True)) as mcp:
        result = await mcp.call_tool("tracker__echo", {"text": "approved"})
        sid = result.meta["keyhand/session"]
    assert text_of(result) == "approved"
    assert await policy_events(gw, sid) == [("policy.asked", None), ("policy.answered", True)]


async def test_a_declined_call_never_reaches_the_upstream(start_gateway: StartGateway, upstream: Upstream) -> None:
    gw, alice = start(start_gateway, upstream)
    async with gw.client(alice, elicitation_callback=answering(False)) as mcp:
        result = await mcp.call_tool("tracker__whoami", {})
        sid = result.meta["keyhand/session"]
    assert result.is_error and "declined" in text_of(result)
    assert upstream.received() == []
    assert await policy_events(gw, sid) == [("policy.asked", None), ("policy.answered", False)]


async def test_a_client_that_cannot_be_asked_is_refused_with_how_to_allow_the_tool(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start(start_gateway, upstream)
    async with gw.client(alice) as mcp:
        result = await mcp.call_tool("tracker__whoami", {})
    assert result.is_error
    assert "tracker__whoami" in text_of(result) and "allow" in text_of(result)
    assert upstream.received() == []


async def test_a_denied_tool_is_not_listed_and_cannot_be_called(
    start_gateway: StartGateway, upstream: Upstream
) -> None:
    gw, alice = start(start_gateway, upstream, {"tracker__*": "allow", "tracker__crash": "deny", "session_*": "deny"})
    async with gw.client(alice) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        with pytest.raises(MCPError):
            await mcp.call_tool("tracker__crash", {})
        allowed = await mcp.call_tool("tracker__echo", {"text": "fine"})
    assert "tracker__crash" not in names and "session_events" not in names
    assert "tracker__echo" in names
    assert text_of(allowed) == "fine"
    assert upstream.proc.poll() is None  # crash never ran


async def test_the_most_specific_pattern_wins() -> None:
    from gateway.policy import decide

    rules: dict[str, Any] = {
        "*": "allow",
        "tracker__*": "ask",
        "tracker__delete_*": "deny",
        "tracker__delete_me": "allow",
    }
    assert decide(rules, "bash", "allow") == "allow"
    assert decide(rules, "tracker__list", "ask") == "ask"
    assert decide(rules, "tracker__delete_all", "ask") == "deny"
    assert decide(rules, "tracker__delete_me", "ask") == "allow"
    assert decide({}, "tracker__list", "ask") == "ask"
