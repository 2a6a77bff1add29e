"""Builds the Starlette app. The order things are put together is written here, once.

    /healthz             200 once the gateway is ready (no auth)
    /mcp                 MCP Streamable HTTP (bearer API key; Host/Origin checked): gateway/mcp_fast.py
                         answers allowed calls, the SDK everything else
    /v1/sessions/...     the ledger API (bearer API key)
    /metrics             Prometheus counters (admin key)
    /v1/admin/...        the admin API (admin key; gateway/admin.py)
    /oauth/...           OAuth start link, callback, client metadata (a browser's; gateway/oauth.py)

Middleware, outermost first: error mapping -> authentication (for /mcp and /v1)
-> the route. Authentication happens before anything else touches the request:
no key or a wrong key is a 401 and nothing else happens.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admin import AdminApi
from gateway.api import LedgerApi
from gateway.auth import LOCAL, bearer_token
from gateway.errors import ApiError, TooLarge, Unauthorized
from gateway.mcp_fast import FastLane
from gateway.mcp_server import PRINCIPAL_SCOPE_KEY, McpSurface
from gateway.metrics import metrics_endpoint
from gateway.oauth import Connections
from gateway.runtime import Runtime

log = logging.getLogger("keyhand.http")

PROTECTED_PREFIXES = ("/mcp", "/v1/", "/metrics")
SESSION_IDLE_S = 30 * 60
"""An MCP connection nobody used for this long is closed (its keyhand session stays in the ledger)."""


class AuthMiddleware:
    """Resolve the principal for /mcp and /v1; refuse with 401 before anything else runs."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        if not self.rt.auth_enabled:
            scope[PRINCIPAL_SCOPE_KEY] = LOCAL
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.rt.keys.resolve(bearer_token(HTTPConnection(scope)))
        except Unauthorized as exc:
            response = JSONResponse(exc.to_json(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        # The SDK binds each MCP connection to the user that opened it: another key presenting the
        # same Mcp-Session-Id gets 404, so it can neither read that connection's stream nor answer
        # its elicitations. The key itself is not put here, only who it stands for.
        scope["user"] = AuthenticatedUser(
            AccessToken(token="keyhand-api-key", client_id=principal.name, scopes=[], subject=principal.name)
        )
        await self.app(scope, receive, send)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.to_json(), status_code=exc.status)


def transport_security(runtime: Runtime) -> TransportSecuritySettings:
    """DNS-rebinding protection as the MCP spec requires: check Host and Origin on /mcp."""
    server = runtime.config.server
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *server.allowed_hosts]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *server.allowed_origins]
    if server.host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        hosts.append(f"{server.host}:*")
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(runtime: Runtime) -> Starlette:
    surface = McpSurface(runtime)
    security = transport_security(runtime)
    manager = StreamableHTTPSessionManager(
        app=surface.server,
        security_settings=security,
        max_request_body_size=runtime.config.server.max_body_bytes,
        session_idle_timeout=SESSION_IDLE_S,
    )
    mcp_endpoint = FastLane(StreamableHTTPASGIApp(manager), manager, surface, security, SESSION_IDLE_S)
    connections = Connections(runtime)
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"]),
        *LedgerApi(runtime).routes(),
        *AdminApi(runtime, connections).routes(),
        *connections.routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await connections.sync_config_providers()
        async with manager.run():
            yield

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={ApiError: api_error})
    app.add_middleware(AuthMiddleware, runtime=runtime)
    app.add_middleware(BodyLimitMiddleware, limit=runtime.config.server.max_body_bytes)
    return app


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413 before any handler reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            body = {"error": {"code": "too_large", "message": f"request body over {self.limit} bytes"}}
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)
