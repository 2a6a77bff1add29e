"""The fast lane: an allowed ``tools/call`` on an open MCP session, answered with one JSON body.

The SDK's Streamable HTTP server answers every request POST with an SSE stream, through a
chain of memory streams, tasks and models: about 1 ms a call here, the largest part of what a
proxied call costs (bench/proxy.py). The stream exists for the back channel, and a call whose
tool is ``allow``ed (nobody is asked) and that asks for no progress does not use it. This lane
answers such a call with an ``application/json`` body, which Streamable HTTP allows for any
POST, after the same checks the SDK makes first:

- Host and Origin (DNS rebinding), Content-Type and Accept, with the SDK's own functions;
- a handshake protocol version and an ``Mcp-Session-Id`` the SDK holds, opened by this same
  API key (anyone else's id is left to the SDK, which answers 404);
- a keyhand session already bound to that connection by an earlier call (the first call of a
  connection always goes through the SDK), and the tool visible and allowed for this profile.

Then the same pipeline runs (``McpSurface.run_tool``). Everything else goes to the SDK untouched:
initialize, lists, ``ask`` tools, calls with a progress token, GET and DELETE, the 2026-07-28
revision. A ``notifications/cancelled`` for a call running in this lane cancels it here.

The SDK keeps its sessions in ``StreamableHTTPSessionManager._server_instances`` and
``_session_owners`` (mcp 2.3, pinned); :func:`sdk_session` is the one place that reads them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.streamable_http import StreamableHTTPServerTransport, check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Principal
from gateway.mcp_server import PRINCIPAL_SCOPE_KEY, SESSION_HEADER, McpSurface

log = logging.getLogger("keyhand.mcp")

_InFlight = dict[tuple[str, str | int], anyio.CancelScope]


def sdk_session(
    manager: StreamableHTTPSessionManager, session_id: str, scope: Scope
) -> StreamableHTTPServerTransport | None:
    """The SDK's live transport for this ``Mcp-Session-Id`` if the same API key opened it, else None."""
    transport = manager._server_instances.get(session_id)  # noqa: SLF001  # see the module docstring
    if transport is None or transport.is_terminated:
        return None
    user = scope.get("user")
    requestor = authorization_context(user) if isinstance(user, AuthenticatedUser) else None
    if requestor != manager._session_owners.get(session_id):  # noqa: SLF001
        return None
    return transport


class AskNobody:
    """The lane takes only ``allow``ed tools, so the pipeline never asks; if it did, nobody could answer."""

    async def ask(self, message: str) -> bool | None:
        return None


class FastLane:
    """ASGI for ``/mcp``: takes the calls described above, hands every other request to the SDK."""

    def __init__(
        self,
        sdk: ASGIApp,
        manager: StreamableHTTPSessionManager,
        surface: McpSurface,
        security: TransportSecuritySettings,
        idle_timeout_s: float,
    ) -> None:
        self.sdk = sdk
        self.manager = manager
        self.surface = surface
        self.security = TransportSecurityMiddleware(security)
        self.idle_timeout_s = idle_timeout_s
        self._in_flight: _InFlight = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        headers = request.headers
        if (
            scope["method"] != "POST"
            or "mcp-session-id" not in headers
            or headers.get("mcp-protocol-version") not in HANDSHAKE_PROTOCOL_VERSIONS
        ):
            await self.sdk(scope, receive, send)
            return
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse) or await self.security.validate_request(request, is_post=True) is not None:
            await self.sdk(scope, receive, send)
            return
        body = await request.body()
        handled = await self._try(scope, headers, body, send)
        if not handled:
            await self.sdk(scope, _replay(body, receive), send)

    async def _try(self, scope: Scope, headers: Headers, body: bytes, send: Send) -> bool:
        message = _loads(body)
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(principal, Principal):
            return False
        session_id = headers["mcp-session-id"]
        transport = sdk_session(self.manager, session_id, scope)
        if transport is None:
            return False
        if message.get("method") == "notifications/cancelled":
            return await self._cancel(scope, session_id, message, send)
        call = _plain_call(message)
        if call is None:
            return False
        session = self.surface.bound_session(principal, session_id, headers.get(SESSION_HEADER))
        if session is None:
            return False
        tool, decision = await self.surface.resolve_tool(principal, call.name)
        if tool is None or decision != "allow":
            return False
        self._keep_open(transport)
        answer = await self._run(session_id, call, lambda: self.surface.run_tool(
            principal, session, tool, decision, call.arguments, call.meta, AskNobody(), None
        ))  # fmt: skip
        self._keep_open(transport)
        payload = json.dumps({"jsonrpc": "2.0", "id": call.id, **answer}).encode()
        await _respond(scope, send, 200, payload, session_id)
        return True

    async def _run(
        self, session_id: str, call: PlainCall, run: Callable[[], Awaitable[types.CallToolResult]]
    ) -> dict[str, Any]:
        """The call's JSON-RPC ``result`` or ``error`` member; cancellable by ``notifications/cancelled``."""
        key = (session_id, call.id)
        answer: dict[str, Any]
        with anyio.CancelScope() as cancel:
            self._in_flight[key] = cancel
            try:
                result = await run()
                answer = {"result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
            except MCPError as exc:
                answer = {"error": exc.error.model_dump(by_alias=True, mode="json", exclude_none=True)}
            except Exception:  # the lane's boundary, as the SDK's: the details go to the log
                log.exception("tools/call %s failed", call.name)
                answer = {"error": {"code": types.INTERNAL_ERROR, "message": "internal error (see the gateway log)"}}
            finally:
                self._in_flight.pop(key, None)
        if cancel.cancelled_caught:
            answer = {"error": {"code": types.INTERNAL_ERROR, "message": "the call was cancelled"}}
        return answer

    async def _cancel(self, scope: Scope, session_id: str, message: dict[str, Any], send: Send) -> bool:
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        cancel = self._in_flight.get((session_id, request_id)) if isinstance(request_id, str | int) else None
        if cancel is None:  # not one of ours: the SDK cancels its own
            return False
        cancel.cancel()
        await _respond(scope, send, 202, b"", session_id)
        return True

    def _keep_open(self, transport: StreamableHTTPServerTransport) -> None:
        """A call here is activity on the session: push back the SDK's idle expiry as its own requests do."""
        idle = transport.idle_scope
        if idle is not None and idle.deadline != float("inf"):
            idle.deadline = max(idle.deadline, anyio.current_time() + self.idle_timeout_s)


@dataclass
class PlainCall:
    """A ``tools/call`` request that asks for no progress: the only kind this lane takes."""

    id: str | int
    name: str
    arguments: dict[str, Any]
    meta: dict[str, Any] | None


def _plain_call(message: dict[str, Any]) -> PlainCall | None:
    request_id, params = message.get("id"), message.get("params")
    if message.get("method") != "tools/call" or not isinstance(params, dict):
        return None
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    name, arguments, meta = params.get("name"), params.get("arguments", {}), params.get("_meta")
    if not isinstance(name, str) or not isinstance(arguments, dict) or not isinstance(meta, dict | None):
        return None
    if meta is not None and "progressToken" in meta:
        return None
    return PlainCall(request_id, name, arguments, meta)


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that gives the body already read, then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(scope: Scope, send: Send, status: int, body: bytes, session_id: str) -> None:
    headers = {"mcp-session-id": session_id}
    if body:
        headers["content-type"] = "application/json"
    await Response(body, status_code=status, headers=headers)(scope, _never, send)


async def _never() -> Message:
    return {"type": "http.disconnect"}
