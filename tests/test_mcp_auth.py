"""Connecting an MCP server that speaks MCP authorization, given only its URL, end to end.

The server is the real SDK upstream (tests/upstream_server.py) behind a small RFC 9728
resource server layer, in a thread on 127.0.0.1: it answers 401 with a
``resource_metadata`` challenge, serves its protected resource metadata, and names the
real oauth2-mock-server as its authorization server (OpenID discovery at the root, no
dynamic registration, so the gateway uses a pre-registered client id). The conformance
suite (scripts/conformance-auth.sh) covers the other discovery and registration variants.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.mcp_auth import parse_challenge
from tests.conftest import StartGateway, text_of
from tests.upstream_server import build
from tests.vault_fixtures import OAuthServer, oauth_server_fixture  # noqa: F401  # a fixture, used by name

pytestmark = pytest.mark.anyio

PRM_PATH = "/.well-known/oauth-protected-resource/mcp"


@dataclass
class ProtectedServer:
    """An RFC 9728 protected resource in front of an MCP app; records every bearer token it accepted."""

    app: ASGIApp
    issuer: str
    base: str = ""
    tokens: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == PRM_PATH:
            prm = {"resource": self.base + "/mcp", "authorization_servers": [self.issuer], "scopes_supported": ["docs"]}
            await JSONResponse(prm)(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode()
        if not header.startswith("Bearer ey"):  # the mock's access tokens are JWTs
            challenge = f'Bearer error="invalid_token", resource_metadata="{self.base}{PRM_PATH}"'
            await JSONResponse({"error": "invalid_token"}, 401, {"WWW-Authenticate": challenge})(scope, receive, send)
            return
        self.tokens.append(header.split(" ", 1)[1])
        await self.app(scope, receive, send)


@pytest.fixture
def protected(oauth_server: OAuthServer) -> Iterator[ProtectedServer]:
    server = ProtectedServer(build().streamable_http_app(), oauth_server.url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv = uvicorn.Server(uvicorn.Config(server, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    assert uv.started, "the protected MCP server did not start"
    yield server
    uv.should_exit = True
    thread.join(timeout=15)
    sock.close()


def test_the_challenge_parser_reads_quoted_and_bare_parameters() -> None:
    header = 'Bearer error="insufficient_scope", scope="a b", resource_metadata="https://x/.well-known/y", n=1'
    assert parse_challenge(header) == {
        "error": "insufficient_scope",
        "scope": "a b",
        "resource_metadata": "https://x/.well-known/y",
        "n": "1",
    }
    assert parse_challenge('Basic realm="x"') == {}


async def test_an_mcp_server_url_is_discovered_connected_with_pkce_and_resource_and_used_by_its_upstream(
    start_gateway: StartGateway, protected: ProtectedServer
) -> None:
    url = protected.base + "/mcp"
    config = {
        "upstreams": [{"name": "docs", "url": url, "credential": "docs"}],
        "agents": {"default": {"tools": {"docs__*": "allow"}}},
    }
    keys: dict[str, str] = {}
    gw = start_gateway(config, prepare=lambda g: keys.update(alice=g.create_key("alice")))
    body = {"mcp_server_url": url, "owner": "alice", "name": "docs", "client_id": "keyhand-test"}
    async with gw.http() as http:
        started = (await http.post("/v1/admin/connections", json=body)).json()
        async with httpx2.AsyncClient(timeout=30) as browser:
            to_provider = await browser.get(started["authorization_url"])
            query = dict(parse_qsl(urlsplit(to_provider.headers["location"]).query))
            page = await browser.get(to_provider.headers["location"], follow_redirects=True)
        provider = (await http.get("/v1/admin/providers/mcp:alice:docs")).json()
        [credential] = (await http.get("/v1/admin/credentials")).json()["credentials"]
    assert query["resource"] == url and query["code_challenge_method"] == "S256" and query["scope"] == "docs"
    assert page.status_code == 200 and "Connected" in page.text
    assert provider["token_url"].startswith(protected.issuer) and provider["token_endpoint_auth_method"] == "none"
    assert credential["resource"] == url and credential["provider"] == "mcp:alice:docs"
    async with gw.client(keys["alice"]) as mcp:
        echoed = await mcp.call_tool("docs__echo", {"text": "through MCP authorization"})
    assert text_of(echoed) == "through MCP authorization" and protected.tokens


async def test_a_server_that_names_another_resource_is_refused_before_any_registration(
    start_gateway: StartGateway, protected: ProtectedServer
) -> None:
    protected.base = protected.base.replace("127.0.0.1", "localhost")  # its metadata now names another origin
    gw = start_gateway()
    url = protected.base.replace("localhost", "127.0.0.1") + "/mcp"
    async with gw.http() as http:
        refused = await http.post("/v1/admin/connections", json={"mcp_server_url": url, "client_id": "x"})
        providers = (await http.get("/v1/admin/providers")).json()["providers"]
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "discovery_failed"
    assert "is not the server" in refused.json()["error"]["message"] and providers == []
