"""OAuth connections through the admin API and /oauth/callback, against a real oauth2-mock-server.

The browser is an HTTP client that keeps cookies and follows redirects; the mock
server approves at once. The upstream is a real MCP server that records the
credential each call brought (tests/upstream_server.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx2
import pytest

from tests.conftest import Gateway, StartGateway, text_of
from tests.proxy_helpers import Upstream
from tests.vault_fixtures import (
    OAuthServer,
    oauth_server_fixture,  # noqa: F401  # a fixture, used by name
    open_in_browser,
    provider_body,
    redirect_to_callback,
)

pytestmark = pytest.mark.anyio

ALLOW = {"default": {"tools": {"tracker__*": "allow"}}}


def start(start_gateway: StartGateway, upstream: Upstream, **vault: Any) -> tuple[Gateway, str]:
    config = {"upstreams": [{"name": "tracker", "url": upstream.url, "credential": "tracker"}], "agents": ALLOW}
    if vault:
        config["vault"] = vault
    keys: dict[str, str] = {}
    gw = start_gateway(config, prepare=lambda g: keys.update(alice=g.create_key("alice")))
    return gw, keys["alice"]


async def begin(gw: Gateway, oauth_server: OAuthServer, name: str = "tracker") -> dict[str, Any]:
    async with gw.http() as http:
        if (await http.get("/v1/admin/providers/mock")).status_code == 404:
            assert (await http.post("/v1/admin/providers", json=provider_body(oauth_server))).status_code == 201
        started = await http.post("/v1/admin/connections", json={"provider": "mock", "owner": "alice", "name": name})
    assert started.status_code == 201, started.text
    body: dict[str, Any] = started.json()
    return body


async def credentials(gw: Gateway) -> list[dict[str, Any]]:
    async with gw.http() as http:
        found: list[dict[str, Any]] = (await http.get("/v1/admin/credentials")).json()["credentials"]
    return found


async def connection(gw: Gateway, started: dict[str, Any]) -> dict[str, Any]:
    async with gw.http() as http:
        status: dict[str, Any] = (await http.get(started["status_url"])).json()
    return status


async def whoami(gw: Gateway, key: str) -> Any:
    async with gw.client(key) as mcp:
        return await mcp.call_tool("tracker__whoami", {})


async def test_a_connected_credential_is_injected_refreshed_and_revoked_at_the_provider(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    gw, alice = start(start_gateway, upstream)
    started = await begin(gw, oauth_server)
    page = await open_in_browser(started["authorization_url"])
    assert page.status_code == 200 and "Connected" in page.text
    assert (await connection(gw, started))["status"] == "connected"
    [stored] = [c for c in await credentials(gw) if c["name"] == "tracker"]
    assert stored["kind"] == "oauth2" and stored["owner"] == "alice" and stored["provider"] == "mock"

    result = await whoami(gw, alice)
    first = upstream.received()[-1]
    assert first.startswith("Bearer ey") and first.split()[1] not in text_of(result)

    before = oauth_server.token_requests()
    async with gw.http() as http:
        refreshed = await http.post("/v1/admin/credentials/alice/tracker/refresh")
    assert refreshed.status_code == 200 and oauth_server.token_requests() == before + 1
    assert refreshed.json()["status"] == "active"
    again = await whoami(gw, alice)
    assert upstream.received()[-1].startswith("Bearer ey") and not again.is_error

    revocations = int(oauth_server.stats()["requests"].get("/revoke", 0))
    async with gw.http() as http:
        deleted = await http.delete("/v1/admin/credentials/alice/tracker")
    assert deleted.status_code == 200
    assert int(oauth_server.stats()["requests"]["/revoke"]) == revocations + 2  # refresh and access token
    assert [c for c in await credentials(gw) if c["name"] == "tracker"] == []
    refused = await whoami(gw, alice)
    assert refused.is_error and "no credential 'tracker'" in text_of(refused)


async def test_a_token_inside_the_refresh_leeway_is_refreshed_before_the_upstream_call(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    gw, alice = start(start_gateway, upstream, refresh_leeway_s=3600)  # the mock's tokens live 3600 s: always due
    started = await begin(gw, oauth_server)
    await open_in_browser(started["authorization_url"])
    before = int(oauth_server.stats()["grants"].get("refresh_token", 0))
    first, second = await whoami(gw, alice), await whoami(gw, alice)
    assert not first.is_error and not second.is_error
    assert int(oauth_server.stats()["grants"]["refresh_token"]) >= before + 2  # a JWT per second: same value
    assert all(t.startswith("Bearer ey") for t in upstream.received()[-2:])


async def test_a_replayed_callback_is_refused_and_the_first_connection_stands(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    gw, _ = start(start_gateway, upstream)
    started = await begin(gw, oauth_server)
    async with httpx2.AsyncClient(timeout=30) as browser:
        first = await open_in_browser(started["authorization_url"], browser)
        replay = await browser.get(str(first.url))
    assert first.status_code == 200
    assert replay.status_code == 400 and "unknown, used or expired" in replay.text
    assert (await connection(gw, started))["status"] == "connected"


async def test_an_unknown_state_is_refused_and_nothing_is_stored(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    gw, _ = start(start_gateway, upstream)
    started = await begin(gw, oauth_server)
    async with httpx2.AsyncClient(timeout=30) as browser:
        callback = await redirect_to_callback(started["authorization_url"], browser)
        query = dict(parse_qsl(urlsplit(callback).query)) | {"state": "not-the-state"}
        wrong = await browser.get(f"{gw.base}/oauth/callback?{urlencode(query)}")
    assert wrong.status_code == 400 and "unknown, used or expired" in wrong.text
    assert "<script" not in wrong.text and wrong.headers["content-security-policy"] == "default-src 'none'"
    assert await credentials(gw) == []


async def test_a_callback_from_another_browser_is_refused_and_spends_the_state(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    gw, _ = start(start_gateway, upstream)
    started = await begin(gw, oauth_server)
    async with httpx2.AsyncClient(timeout=30) as victim, httpx2.AsyncClient(timeout=30) as other:
        callback = await redirect_to_callback(started["authorization_url"], victim)
        stolen = await other.get(callback)
        late = await victim.get(callback)
    assert stolen.status_code == 400 and "another browser" in stolen.text
    assert late.status_code == 400 and "unknown, used or expired" in late.text
    assert await credentials(gw) == []
    assert (await connection(gw, started))["status"] == "failed"


async def test_a_failing_token_endpoint_or_a_provider_refusal_stores_nothing(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    gw, _ = start(start_gateway, upstream)
    failing = await begin(gw, oauth_server)
    oauth_server.fail_next_token_request(503)
    page = await open_in_browser(failing["authorization_url"])
    assert page.status_code == 502 and "HTTP 503" in page.text
    status = await connection(gw, failing)
    assert status["status"] == "failed" and "HTTP 503" in status["message"]

    refusing = await begin(gw, oauth_server)
    async with httpx2.AsyncClient(timeout=30) as browser:
        callback = await redirect_to_callback(refusing["authorization_url"], browser)
        state = dict(parse_qsl(urlsplit(callback).query))["state"]
        query = urlencode({"state": state, "error": "access_denied<b>", "error_description": "no"})
        denied = await browser.get(f"{gw.base}/oauth/callback?{query}")
    assert denied.status_code == 400 and "access_denied&lt;b&gt;" in denied.text and "<b>" not in denied.text
    assert await credentials(gw) == []


async def test_keyhand_vault_connect_follow_connects_through_the_running_gateway(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    gw, _ = start(start_gateway, upstream)
    async with gw.http() as http:
        await http.post("/v1/admin/providers", json=provider_body(oauth_server))
    done = gw.cli("vault", "connect", "mock", "--owner", "alice", "--name", "cli", "--follow", "--url", gw.base)
    assert done.stdout.startswith(f"{gw.base}/oauth/start/conn_") and "connected cli (alice)" in done.stderr
    assert [(c["name"], c["owner"]) for c in await credentials(gw)] == [("cli", "alice")]
    unknown = gw.cli("vault", "connect", "nope", "--follow", "--url", gw.base, check=False)
    assert unknown.returncode == 2 and "no OAuth provider 'nope'" in unknown.stderr
