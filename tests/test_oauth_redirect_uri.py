"""A code issued for another redirect URI, against a real authorization server that checks it.

oauth2-mock-server (tests/test_oauth.py) does not compare ``redirect_uri`` at the
token endpoint; oidc-provider does (RFC 6749 §4.1.3). Its client has two
registered redirect URIs: the gateway's ``/oauth/callback`` and another one. A
code obtained for the other URI, with Keyhand's own state and PKCE challenge,
reaches Keyhand's callback in the browser that opened the link — so the only
thing wrong with it is the redirect URI, and the authorization server must be
the one that refuses it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx2
import pytest

from tests.conftest import Gateway, StartGateway
from tests.oidc_fixtures import (
    OidcProvider,
    StartOidcProvider,
    start_oidc_provider_fixture,  # noqa: F401  # a fixture, used by name
)

pytestmark = pytest.mark.anyio

OTHER_REDIRECT_URI = "https://other-deployment.example.test/oauth/callback"


def start(start_gateway: StartGateway, start_oidc_provider: StartOidcProvider) -> tuple[Gateway, OidcProvider]:
    gw = start_gateway()
    return gw, start_oidc_provider((f"{gw.base}/oauth/callback", OTHER_REDIRECT_URI))


async def begin(gw: Gateway, provider: OidcProvider) -> dict[str, Any]:
    """Register the provider and start a connection for alice through the admin API."""
    async with gw.http() as http:
        assert (await http.post("/v1/admin/providers", json=provider.provider_body())).status_code == 201
        started = await http.post("/v1/admin/connections", json={"provider": "oidc", "owner": "alice", "name": "id"})
    assert started.status_code == 201, started.text
    body: dict[str, Any] = started.json()
    return body


async def admin_get(gw: Gateway, path: str) -> dict[str, Any]:
    async with gw.http() as http:
        response = await http.get(path)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def with_redirect_uri(url: str, redirect_uri: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | {"redirect_uri": redirect_uri}
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_a_connection_through_the_admin_api_and_the_callback_stores_the_tokens_of_oidc_provider(
    start_gateway: StartGateway, start_oidc_provider: StartOidcProvider
) -> None:
    gw, provider = start(start_gateway, start_oidc_provider)
    started = await begin(gw, provider)
    async with httpx2.AsyncClient(timeout=30) as browser:
        to_provider = await browser.get(started["authorization_url"])
        assert to_provider.status_code == 302
        authorize = dict(parse_qsl(urlsplit(to_provider.headers["location"]).query))
        assert authorize["code_challenge_method"] == "S256" and authorize["redirect_uri"] == provider.redirect_uris[0]
        callback = await provider.authorize(to_provider.headers["location"], browser)
        assert callback.startswith(f"{gw.base}/oauth/callback?")
        page = await browser.get(callback)

    assert page.status_code == 200 and "Connected" in page.text, page.text
    assert provider.token_errors() == []
    assert (await admin_get(gw, started["status_url"]))["status"] == "connected"
    [stored] = (await admin_get(gw, "/v1/admin/credentials"))["credentials"]
    assert (stored["name"], stored["owner"], stored["kind"], stored["provider"]) == ("id", "alice", "oauth2", "oidc")
    assert stored["status"] == "active" and stored["expires_at"] is not None  # oidc-provider's expires_in


async def test_a_code_issued_for_another_registered_redirect_uri_is_refused_and_nothing_is_stored(
    start_gateway: StartGateway, start_oidc_provider: StartOidcProvider
) -> None:
    gw, provider = start(start_gateway, start_oidc_provider)
    started = await begin(gw, provider)
    async with httpx2.AsyncClient(timeout=30) as browser:
        to_provider = await browser.get(started["authorization_url"])  # sets the flow's browser cookie
        assert to_provider.status_code == 302
        elsewhere = await provider.authorize(
            with_redirect_uri(to_provider.headers["location"], OTHER_REDIRECT_URI), browser
        )
        assert elsewhere.startswith(OTHER_REDIRECT_URI + "?")
        issued = dict(parse_qsl(urlsplit(elsewhere).query))
        assert issued["state"] == started["state"] and issued["code"]
        query = urlencode({"code": issued["code"], "state": issued["state"], "iss": issued["iss"]})
        page = await browser.get(f"{gw.base}/oauth/callback?{query}")

    assert page.status_code == 400, page.text
    assert "Not connected" in page.text and "invalid_grant" in page.text and "redirect URI" in page.text
    assert page.headers["content-security-policy"] == "default-src 'none'"
    [refusal] = provider.token_errors()
    assert refusal["error"] == "invalid_grant" and refusal["error_detail"] == "authorization code redirect_uri mismatch"
    assert (await admin_get(gw, "/v1/admin/credentials"))["credentials"] == []
    status = await admin_get(gw, started["status_url"])
    assert status["status"] == "failed" and "invalid_grant" in status["message"]
