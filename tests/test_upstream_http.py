"""The lean HTTP path to an upstream: what it sends, and what it makes of what comes back.

The upstream here is a real HTTP/1.1 server on 127.0.0.1 that answers each request with the
next response of a script (so a test can send a 401, an SSE stream, garbage or nothing at all)
and records every request it received, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from gateway.injection import VaultAuth
from gateway.upstream_http import HttpCaller, SessionExpired, SseDecoder, UpstreamHttpError

pytestmark = pytest.mark.anyio

HOLD = b""
"""A scripted response that never comes: the server keeps the connection open and silent."""


class ScriptedServer:
    def __init__(self, script: list[bytes]) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.script.pop(0)
                if answer == HOLD:
                    await asyncio.sleep(3600)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    def bodies(self) -> list[Any]:
        return [json.loads(r.split(b"\r\n\r\n", 1)[1]) for r in self.requests]


def http(status: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def answer(result: Any, request_id: str = "keyhand-1") -> bytes:
    return http("200 OK", json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode())


def sse(*events: Any) -> bytes:
    body = b"".join(b"event: message\r\ndata: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked


class Harness:
    """Starts scripted servers and callers; closes every connection of both at the end."""

    def __init__(self) -> None:
        self.servers: list[tuple[asyncio.Server, ScriptedServer]] = []
        self.callers: list[HttpCaller] = []

    async def start(self, script: list[bytes]) -> tuple[ScriptedServer, str]:
        scripted = ScriptedServer(script)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        self.servers.append((server, scripted))
        return scripted, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"

    def caller(self, url: str, auth: VaultAuth | None = None) -> HttpCaller:
        c = HttpCaller(url, auth=auth, connect_timeout_s=5)
        c.session_id, c.protocol_version = "upstream-session-1", "2025-11-25"
        self.callers.append(c)
        return c

    async def close(self) -> None:
        for c in self.callers:
            c.close()
        for server, scripted in self.servers:
            for writer in scripted.writers:
                writer.close()
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0)


@pytest.fixture
async def serve() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.close()


async def ignore(message: dict[str, Any]) -> None:
    pass


async def test_a_call_carries_the_session_headers_and_the_secret_fetched_at_send_time(serve: Harness) -> None:
    server, url = await serve.start([answer({"content": []})])
    fetched: list[bool] = []

    async def fetch(refresh: bool) -> str:
        fetched.append(refresh)
        return "Bearer from-the-vault"

    result = await serve.caller(url, VaultAuth(fetch)).request("tools/call", {"name": "echo"}, ignore)
    assert result == {"content": []}
    head = server.requests[0].decode()
    assert "Mcp-Session-Id: upstream-session-1\r\n" in head and "Mcp-Protocol-Version: 2025-11-25\r\n" in head
    assert "Authorization: Bearer from-the-vault\r\n" in head and fetched == [False]
    assert server.bodies()[0] == {
        "jsonrpc": "2.0",
        "id": "keyhand-1",
        "method": "tools/call",
        "params": {"name": "echo"},
    }


async def test_a_401_gets_one_retry_with_a_refreshed_secret(serve: Harness) -> None:
    server, url = await serve.start([http("401 Unauthorized"), answer("ok")])

    async def fetch(refresh: bool) -> str:
        return "Bearer fresh" if refresh else "Bearer stale"

    assert await serve.caller(url, VaultAuth(fetch)).request("tools/call", {}, ignore) == "ok"
    assert [b"Bearer stale" in r for r in server.requests] == [True, False]
    assert b"Bearer fresh" in server.requests[1]


async def test_a_secret_with_a_line_break_is_never_sent(serve: Harness) -> None:
    server, url = await serve.start([answer("never")])

    async def fetch(refresh: bool) -> str:
        return "Bearer x\r\nX-Injected: yes"

    with pytest.raises(UpstreamHttpError, match="line break"):
        await serve.caller(url, VaultAuth(fetch)).request("tools/call", {}, ignore)
    assert server.requests == []


async def test_an_sse_answer_brings_its_notifications_and_a_request_of_ours_is_declined(serve: Harness) -> None:
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": 1}}
    asks = {"jsonrpc": "2.0", "id": 7, "method": "elicitation/create", "params": {"message": "?"}}
    result = {"jsonrpc": "2.0", "id": "keyhand-1", "result": {"content": [{"type": "text", "text": "done"}]}}
    server, url = await serve.start([sse(progress, asks, result), http("202 Accepted")])
    seen: list[dict[str, Any]] = []

    async def note(message: dict[str, Any]) -> None:
        seen.append(message)

    assert await serve.caller(url).request("tools/call", {}, note) == result["result"]
    assert seen == [progress]
    declined = server.bodies()[1]
    assert declined["id"] == 7 and declined["error"]["code"] == -32601


async def test_sequential_calls_reuse_one_connection(serve: Harness) -> None:
    server, url = await serve.start([answer(i, f"keyhand-{i}") for i in range(1, 6)])
    c = serve.caller(url)
    assert [await c.request("tools/call", {}, ignore) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert len(c._idle) == 1  # one connection, back in the pool after every call


async def test_a_json_rpc_error_is_an_mcp_error_and_http_errors_say_what_happened(serve: Harness) -> None:
    error = {"jsonrpc": "2.0", "id": "keyhand-1", "error": {"code": -32602, "message": "unknown tool"}}
    _, url = await serve.start([http("200 OK", json.dumps(error).encode())])
    with pytest.raises(MCPError, match="unknown tool"):
        await serve.caller(url).request("tools/call", {}, ignore)

    _, url = await serve.start([http("404 Not Found")])
    with pytest.raises(SessionExpired, match="upstream-session-1"):
        await serve.caller(url).request("tools/call", {}, ignore)

    _, url = await serve.start([http("200 OK", b"<html>", content_type="text/html")])
    with pytest.raises(UpstreamHttpError, match="text/html"):
        await serve.caller(url).request("tools/call", {}, ignore)

    _, url = await serve.start([b"NOT HTTP AT ALL\r\n\r\n"])
    with pytest.raises(UpstreamHttpError, match="malformed HTTP"):
        await serve.caller(url).request("tools/call", {}, ignore)

    _, url = await serve.start([sse({"jsonrpc": "2.0", "method": "notifications/message", "params": {}})])
    with pytest.raises(UpstreamHttpError, match="without answering"):
        await serve.caller(url).request("tools/call", {}, ignore)


async def test_a_call_given_up_is_cancelled_at_the_upstream(serve: Harness) -> None:
    server, url = await serve.start([HOLD, http("202 Accepted")])
    with anyio.move_on_after(0.3):
        await serve.caller(url).request("tools/call", {"name": "slow"}, ignore)
    with anyio.fail_after(5):
        while len(server.requests) < 2:
            await anyio.sleep(0.01)
    cancelled = server.bodies()[1]
    assert cancelled["method"] == "notifications/cancelled" and cancelled["params"]["requestId"] == "keyhand-1"


def test_server_sent_events_are_decoded_across_reads_and_line_endings() -> None:
    decoder = SseDecoder()
    assert decoder.feed("id: 1\r\nretry: 100\r\n\r\n: a comment\n") == []  # a priming event has no data
    assert decoder.feed('event: message\ndata: {"a":') == []
    assert decoder.feed(" 1}\n\ndata: one\rdata:two\r\r\n") == ['{"a": 1}', "one\ntwo"]
    assert decoder.feed("data: x\r") == []  # a CR at the end of a read may be half of a CRLF
    assert decoder.feed("\n\r\n") == ["x"]
