"""The hot path to an HTTP upstream: one ``tools/call`` POST on a kept-alive connection.

The SDK's ``ClientSession`` opens and keeps the upstream session (initialize, ``tools/list``,
the GET stream that brings ``list_changed``). A call through it crosses several memory streams
and tasks, and its httpx2 client opens a new TCP connection for every call (the SSE body is
closed before the server ends it): about 1.7 ms of the ~3 ms a proxied call added
(bench/proxy.py). This client speaks only what a call needs, on the same upstream session:

- one POST with the session's ``Mcp-Session-Id`` and ``Mcp-Protocol-Version``, the secret
  header fetched at send time from the :class:`~gateway.injection.VaultAuth` (after a 401, a
  refreshed one, once), and no other credential: nothing the caller sent reaches the upstream;
- the answer as ``application/json`` or as an SSE stream, whose notifications on the way
  (progress, ``list_changed``) go to ``on_notification``; a request the upstream makes of us
  mid-call gets a JSON-RPC error, as the SDK client answers when it has no handler;
- when the caller gives up (cancelled, timed out), ``notifications/cancelled`` and a closed
  connection, so the upstream stops too;
- responses parsed by httptools (llhttp, as uvicorn does), capped at :data:`MAX_RESPONSE_BYTES`.

A JSON-RPC error answer raises ``MCPError``; anything else that goes wrong raises
:class:`UpstreamHttpError` and the caller drops the upstream connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httptools
import httpx2
from mcp.shared.exceptions import MCPError

from gateway import __version__
from gateway.injection import VaultAuth

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_MAX_IDLE = 32
_ACCEPT = "application/json, text/event-stream"

Notify = Callable[[dict[str, Any]], Awaitable[None]]


class UpstreamHttpError(Exception):
    """The upstream answered with something that is not a usable MCP response (or not at all)."""


class SessionExpired(UpstreamHttpError):
    """HTTP 404 on a session request: the upstream forgot this session; reconnect to get a new one."""


class _Parsed:
    """httptools callbacks: status, headers, body pieces as they arrive."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.pieces: list[bytes] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.size = 0
        self.parser: Any = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = bool(self.parser.should_keep_alive())  # llhttp forgets it once the message ends

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _parser() -> tuple[_Parsed, Any]:
    parsed = _Parsed()
    parsed.parser = httptools.HttpResponseParser(parsed)
    return parsed, parsed.parser


class _Connection:
    """One HTTP/1.1 connection: a request at a time, its response read incrementally."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parsed, self.parser = _parser()

    def reusable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def send(self, head: bytes, body: bytes) -> None:
        self.parsed, self.parser = _parser()
        self.writer.write(head + body)
        while not self.parsed.headers_done:
            await self._feed()

    async def _feed(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise UpstreamHttpError("the upstream closed the connection mid-response")
        self.parsed.size += len(data)
        if self.parsed.size > MAX_RESPONSE_BYTES:
            raise UpstreamHttpError(f"the upstream's response exceeds {MAX_RESPONSE_BYTES} bytes")
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise UpstreamHttpError(f"the upstream sent malformed HTTP ({exc})") from None

    async def next_piece(self) -> bytes | None:
        """The next piece of body, or None once the response is complete."""
        while not self.parsed.pieces:
            if self.parsed.complete:
                return None
            await self._feed()
        return self.parsed.pieces.pop(0)

    async def read_body(self) -> bytes:
        parts = []
        while (piece := await self.next_piece()) is not None:
            parts.append(piece)
        return b"".join(parts)

    def status(self) -> int:
        return int(self.parser.get_status_code())

    def keep_alive(self) -> bool:
        return self.parsed.complete and self.parsed.keep_alive

    def close(self) -> None:
        self.writer.close()


class SseDecoder:
    """Server-sent events to their ``data`` strings (the W3C rules that MCP uses: fields, blank line)."""

    def __init__(self) -> None:
        self._pending: list[str] = []  # the unfinished line, in pieces (a long event costs O(n), not O(n^2))
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        if "\n" not in text and "\r" not in text:
            self._pending.append(text)
            return []
        buffer = "".join(self._pending) + text
        held = "\r" if buffer.endswith("\r") else ""  # may be the first half of a CRLF
        lines = buffer[: len(buffer) - len(held)].replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = [lines.pop() + held]
        events: list[str] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
        return events


def _header_line(name: str, value: str) -> bytes:
    if any(c in value or c in name for c in "\r\n\0"):
        raise UpstreamHttpError(f"refusing to send a {name} header with a line break in it")
    return f"{name}: {value}\r\n".encode("latin-1")


class HttpCaller:
    """Sends JSON-RPC requests of one upstream session; keeps a few connections alive for reuse."""

    def __init__(self, url: str, *, auth: VaultAuth | None, connect_timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = parts.port is None or parts.port == (443 if parts.scheme == "https" else 80)
        self.host_header = (f"[{self.host}]" if ":" in self.host else self.host) + (
            "" if default_port else f":{self.port}"
        )
        self.ssl: ssl.SSLContext | None = httpx2.create_ssl_context() if parts.scheme == "https" else None
        self.auth = auth
        self.connect_timeout_s = connect_timeout_s
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._ids = itertools.count(1)
        self._idle: list[_Connection] = []

    # -- requests ----------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any], on_notification: Notify) -> Any:
        """Send one request; return its ``result`` (a JSON-RPC error raises ``MCPError``)."""
        request_id = f"keyhand-{next(self._ids)}"
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        try:
            return await self._exchange(request_id, body, on_notification)
        except anyio.get_cancelled_exc_class():  # the caller gave up (or timed out): tell the upstream
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._send_quietly(
                    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
                )
            raise

    async def _exchange(self, request_id: str, body: bytes, on_notification: Notify) -> Any:
        conn = await self._post(body)
        try:
            kind = conn.parsed.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "application/json":
                message = _json(await conn.read_body())
                result = _answer(message, request_id)
            elif kind == "text/event-stream":
                result = await self._read_stream(conn, request_id, on_notification)
            else:
                raise UpstreamHttpError(f"the upstream answered with content type {kind or 'none'!r}")
        except BaseException:
            conn.close()
            raise
        self._release(conn)
        return result

    async def _read_stream(self, conn: _Connection, request_id: str, on_notification: Notify) -> Any:
        decoder = SseDecoder()
        while (piece := await conn.next_piece()) is not None:
            for data in decoder.feed(piece.decode("utf-8", "replace")):
                message = _json(data.encode())
                if not isinstance(message, dict):
                    continue
                if message.get("id") == request_id and ("result" in message or "error" in message):
                    result = _answer(message, request_id)
                    await self._drain(conn)
                    return result
                if "method" in message and "id" in message:  # the upstream asks us something: we cannot answer
                    await self._send_quietly(
                        {
                            "jsonrpc": "2.0",
                            "id": message["id"],
                            "error": {"code": -32601, "message": "Keyhand does not answer upstream requests"},
                        }
                    )
                elif "method" in message:
                    await on_notification(message)
        raise UpstreamHttpError("the upstream ended its event stream without answering")

    @staticmethod
    async def _drain(conn: _Connection) -> None:
        """Read to the end of a stream the server is closing, so the connection can be reused.

        An SDK server ends the stream right after the answer; one that keeps it open costs this
        short wait and a closed connection, never a stalled call.
        """
        with anyio.move_on_after(0.01):
            while await conn.next_piece() is not None:
                pass

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        """A notification or a response to the upstream (answered 202); failures do not matter here."""
        try:
            conn = await self._post(json.dumps(message).encode())
            await conn.read_body()
            self._release(conn)
        except (OSError, UpstreamHttpError, MCPError):
            pass

    # -- HTTP ----------------------------------------------------------------------

    async def _post(self, body: bytes) -> _Connection:
        """POST ``body`` with the session's headers and the secret; refresh the secret once after a 401."""
        for refresh in (False, True):
            head = self._head(len(body), await self.auth.headers(refresh=refresh) if self.auth else {})
            conn = await self._connection()
            try:
                await conn.send(head, body)
            except BaseException:
                conn.close()
                raise
            status = conn.status()
            if status == 401 and self.auth is not None and not refresh:
                conn.close()
                continue
            if 200 <= status < 300:
                return conn
            conn.close()
            if status == 404 and self.session_id:
                raise SessionExpired(f"the upstream no longer knows session {self.session_id} (HTTP 404)")
            raise UpstreamHttpError(f"the upstream answered HTTP {status}")
        raise AssertionError("unreachable")

    def _head(self, length: int, secret_headers: dict[str, str]) -> bytes:
        lines = [
            f"POST {self.target} HTTP/1.1\r\n".encode("latin-1"),
            _header_line("Host", self.host_header),
            _header_line("User-Agent", f"keyhand/{__version__}"),
            _header_line("Accept", _ACCEPT),
            _header_line("Content-Type", "application/json"),
            _header_line("Content-Length", str(length)),
        ]
        if self.session_id:
            lines.append(_header_line("Mcp-Session-Id", self.session_id))
        if self.protocol_version:
            lines.append(_header_line("Mcp-Protocol-Version", self.protocol_version))
        lines.extend(_header_line(name, value) for name, value in secret_headers.items())
        return b"".join(lines) + b"\r\n"

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        with anyio.fail_after(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
            )
        return _Connection(reader, writer)

    def _release(self, conn: _Connection) -> None:
        if conn.keep_alive() and len(self._idle) < _MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise UpstreamHttpError("the upstream sent a body that is not JSON") from None


def _answer(message: Any, request_id: str) -> Any:
    if not isinstance(message, dict) or message.get("id") != request_id:
        raise UpstreamHttpError("the upstream's answer is not a JSON-RPC response to this call")
    error = message.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise UpstreamHttpError("the upstream sent a malformed JSON-RPC error")
        raise MCPError(int(error.get("code", -32603)), str(error.get("message", "")), error.get("data"))
    return message.get("result")
