"""A real OpenID Connect authorization server (npm ``oidc-provider``) started by the tests.

Unlike oauth2-mock-server, oidc-provider enforces the token endpoint's rules
(RFC 6749 §4.1.3: ``redirect_uri`` must match the authorization request; RFC 7636
§4.6: the PKCE verifier must match). Its static client's redirect URIs name the
gateway's callback, whose port is only known once the gateway runs, so the
fixture is a factory: ``start_oidc_provider(redirect_uris)`` starts one server
(in about 0.2 s) and the fixture stops every server it started after the test.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx2
import pytest

from tests.vault_fixtures import NODE, ROOT

PROVIDER_MODULE = ROOT / ".tools/node_modules/oidc-provider/lib/index.js"
SERVER_SCRIPT = ROOT / "tests/oidc_provider_server.mjs"
CLIENT_ID = "keyhand-oidc-test"
CLIENT_SECRET = "oidc-client-secret-5b8e2f71c4"
START_TIMEOUT_S = 20.0


@dataclass
class OidcProvider:
    """A running oidc-provider with one client (``CLIENT_ID``) registered for ``redirect_uris``."""

    url: str
    redirect_uris: tuple[str, ...]

    def token_errors(self) -> list[dict[str, Any]]:
        """The token endpoint's refusals so far: ``error``, ``error_description``, ``error_detail``."""
        errors: list[dict[str, Any]] = httpx2.get(f"{self.url}/_test/token-errors", timeout=5).json()
        return errors

    def provider_body(self, name: str = "oidc", **overrides: Any) -> dict[str, Any]:
        """The admin API body creating a Keyhand provider for this server's client."""
        body: dict[str, Any] = {
            "name": name,
            "authorization_url": f"{self.url}/auth",
            "token_url": f"{self.url}/token",
            "revocation_url": f"{self.url}/token/revocation",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "default_scopes": ["openid"],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        return body | overrides

    async def authorize(self, authorization_url: str, browser: httpx2.AsyncClient) -> str:
        """Follow the provider's redirects (its auto-consenting interaction included) as a browser would.

        Returns the ``Location`` the provider finally sends the browser to: a
        registered redirect URI with ``code``, ``state`` and ``iss``. Raises
        AssertionError if the provider answers anything but a redirect.
        """
        url = authorization_url
        for _ in range(10):  # /auth -> /interaction/{uid} -> /auth/{uid} -> the redirect URI
            response = await browser.get(url)
            assert response.status_code in (302, 303), f"{response.status_code} from {url}: {response.text[:500]}"
            url = urljoin(url, response.headers["location"])
            if not url.startswith(self.url + "/"):
                return url
        raise AssertionError(f"the provider kept redirecting within itself: last {url}")


StartOidcProvider = Callable[[tuple[str, ...]], OidcProvider]


@pytest.fixture(name="start_oidc_provider")
def start_oidc_provider_fixture() -> Iterator[StartOidcProvider]:
    if not NODE.exists() or not PROVIDER_MODULE.exists():
        pytest.fail(f"Node 22 and oidc-provider are needed under {ROOT / '.tools'} (bash scripts/node-tools.sh)")
    started: list[subprocess.Popen[str]] = []

    def start(redirect_uris: tuple[str, ...]) -> OidcProvider:
        command = [str(NODE), str(SERVER_SCRIPT), str(PROVIDER_MODULE), CLIENT_ID, CLIENT_SECRET, *redirect_uris]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline() if proc.stdout else ""), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"oidc-provider did not start within {START_TIMEOUT_S:.0f} s") from None
        if not line:
            raise AssertionError(f"oidc-provider exited at start (code {proc.wait(timeout=10)})")
        return OidcProvider(json.loads(line)["url"], redirect_uris)

    yield start
    for proc in started:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Close stdin (the server exits when it ends); kill it if it has not gone within 10 s."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
