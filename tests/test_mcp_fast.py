"""The fast lane: an allowed call on an open MCP connection comes back as plain JSON, checked as the SDK checks.

These tests speak Streamable HTTP by hand (httpx2), so they can see what the SDK client hides:
the content type of each answer, and what happens to a request with a forged Origin, someone
else's session id, or a session that was closed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.anyio

VERSION = "2025-11-25"


class RawMcp:
    """One MCP connection, by hand: initialize, then JSON-RPC POSTs with its session id."""

    def __init__(self, gw: Gateway, http: httpx2.AsyncClient) -> None:
        self.gw, self.http = gw, http
        self.session_id = ""
        self.ids = iter(range(1, 1_000_000))

    def headers(self, **extra: str) -> dict[str, str]:
        session = {"Mcp-Session-Id": self.session_id} if self.session_id else {}
        return {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Mcp-Protocol-Version": VERSION,
            **session,
            **extra,
        }

    async def open(self) -> None:
        init = {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        response = await self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
        self.session_id = response.headers["mcp-session-id"]
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def post(self, message: dict[str, Any], **headers: str) -> httpx2.Response:
        return await self.http.post(self.gw.url, json=message, headers=self.headers(**headers))

    async def call(self, tool: str, arguments: dict[str, Any], **kw: Any) -> httpx2.Response:
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        if "meta" in kw:
            params["_meta"] = kw.pop("meta")
        message = {
            "jsonrpc": "2.0",
            "id": kw.pop("request_id", next(self.ids)),
            "method": "tools/call",
            "params": params,
        }
        return await self.post(message, **kw)


def kind(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0]


def message_of(response: httpx2.Response) -> Any:
    if kind(response) == "application/json":
        return response.json()
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads([d for d in data if d][-1])


@pytest.fixture
async def raw(gateway: Gateway) -> AsyncIterator[RawMcp]:
    key = gateway.create_key("fast-lane")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        mcp = RawMcp(gateway, http)
        await mcp.open()
        yield mcp


async def test_after_the_first_call_allowed_calls_come_back_as_plain_json_and_are_in_the_ledger(
    gateway: Gateway, raw: RawMcp
) -> None:
    first = await raw.call("session_events", {"limit": 1})
    second = await raw.call("session_events", {"limit": 1})
    assert kind(first) == "text/event-stream"  # the SDK binds the connection to a keyhand session
    assert kind(second) == "application/json" and second.headers["mcp-session-id"] == raw.session_id
    one, two = message_of(first), message_of(second)
    assert two["id"] == 2 and two["result"]["isError"] is False
    session = two["result"]["_meta"]["keyhand/session"]
    assert session == one["result"]["_meta"]["keyhand/session"]
    async with gateway.http() as admin:
        events = (await admin.get(f"/v1/sessions/{session}/events", params={"types": "tool.*"})).json()["events"]
    assert [e["type"] for e in events] == ["tool.call", "tool.result", "tool.call", "tool.result"]


async def test_bad_arguments_in_the_lane_are_a_tool_error_like_anywhere_else(raw: RawMcp) -> None:
    await raw.call("session_events", {})
    answer = message_of(await raw.call("session_events", {"limit": "many"}))
    assert answer["result"]["isError"] is True and "limit" in answer["result"]["content"][0]["text"]


async def test_a_call_asking_for_progress_still_gets_its_stream(raw: RawMcp) -> None:
    await raw.call("session_events", {})
    streamed = await raw.call("session_events", {}, meta={"progressToken": "p1"})
    assert kind(streamed) == "text/event-stream" and message_of(streamed)["result"]["isError"] is False


async def test_the_lane_refuses_what_the_sdk_refuses(gateway: Gateway, raw: RawMcp) -> None:
    await raw.call("session_events", {})
    assert (await raw.call("session_events", {}, Origin="http://evil.example")).status_code == 403
    assert (await raw.call("session_events", {}, Accept="application/json")).status_code == 406
    unknown = await raw.post({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "nope"}})
    assert "nope" in json.dumps(message_of(unknown))  # an unknown tool is the SDK's error, as before

    other = gateway.create_key("someone-else")
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {other}"}, timeout=30) as http:
        stolen = await http.post(gateway.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                    "params": {"name": "session_events", "arguments": {}}},
                                 headers=raw.headers())  # fmt: skip
    assert stolen.status_code == 404  # another key cannot use this connection

    assert (await raw.http.delete(gateway.url, headers=raw.headers())).status_code == 200
    assert (await raw.call("session_events", {})).status_code == 404  # a closed connection is closed


async def test_a_call_in_the_lane_is_cancelled_by_notifications_cancelled(gateway: Gateway, raw: RawMcp) -> None:
    await raw.call("bash", {"command": "true"})
    answers: list[httpx2.Response] = []

    async def long_call() -> None:
        answers.append(await raw.call("bash", {"command": "sleep 30"}, request_id="long"))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            await anyio.sleep(1)
            notice = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "long"}}
            assert (await raw.post(notice)).status_code == 202
    answer = message_of(answers[0])
    assert answer["id"] == "long" and "cancelled" in answer["error"]["message"]
    assert message_of(await raw.call("bash", {"command": "echo still here"}))["result"]["isError"] is False
