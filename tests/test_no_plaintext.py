"""No plaintext: after real flows, no secret is in the SQLite file, its WAL, a log line or an API response.

Also: a wrong master key stops `keyhand serve` before it listens, with a message that says what to do.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx2
import pytest

from tests.conftest import ROOT, StartGateway, keyhand_cmd
from tests.proxy_helpers import Upstream
from tests.vault_fixtures import (
    MOCK_CLIENT_SECRET,
    OAuthServer,
    oauth_server_fixture,  # noqa: F401  # a fixture, used by name
    open_in_browser,
    provider_body,
)
from vault.crypto import encode_keys, generate_key

pytestmark = pytest.mark.anyio

STATIC = {"bearer": "np-bearer-0b1c2d3e4f5a", "api_key": "np-apikey-6b7c8d9e0f1a", "basic": "np-basic-pw-2b3c4d5e6f"}
ALLOW = {"default": {"tools": {"tracker__*": "allow"}}}


async def test_no_secret_used_in_the_flows_is_in_the_database_wal_logs_or_any_admin_response(
    start_gateway: StartGateway, upstream: Upstream, oauth_server: OAuthServer
) -> None:
    config = {"upstreams": [{"name": "tracker", "url": upstream.url, "credential": "tracker"}], "agents": ALLOW}
    keys: dict[str, str] = {}
    gw = start_gateway(config, prepare=lambda g: keys.update(alice=g.create_key("alice")))
    responses: list[httpx2.Response] = []
    async with gw.http() as http:
        responses.append(await http.post("/v1/admin/providers", json=provider_body(oauth_server)))
        for kind, secret in STATIC.items():
            body = {"name": f"np-{kind}", "kind": kind, "owner": "alice", "secret": secret, "username": "u"}
            responses.append(await http.post("/v1/admin/credentials", json=body))
        started = await http.post(
            "/v1/admin/connections", json={"provider": "mock", "owner": "alice", "name": "tracker"}
        )
        responses += [started, await open_in_browser(started.json()["authorization_url"])]
        async with gw.client(keys["alice"]) as mcp:
            await mcp.call_tool("tracker__whoami", {})
            responses.append(await http.post("/v1/admin/credentials/alice/tracker/refresh"))
            await mcp.call_tool("tracker__leak", {})
        for path in ("/v1/admin/providers", "/v1/admin/credentials", started.json()["status_url"]):
            responses.append(await http.get(path))
        responses.append(await http.delete("/v1/admin/credentials/alice/np-bearer"))
    tokens = {line.split(" ", 1)[1] for line in upstream.received() if line.startswith("Bearer ")}
    assert tokens, "the upstream received no OAuth token"
    gw.stop()  # the WAL is kept: SQLite only checkpoints it into the main file on close
    stored = b"".join(p.read_bytes() for p in gw.home.glob("keyhand.db*"))
    assert (gw.home / "keyhand.db").exists() and stored
    seen = "\n".join(r.text for r in responses) + gw.logs()
    for secret in [MOCK_CLIENT_SECRET, *STATIC.values(), *tokens]:
        assert secret.encode() not in stored, secret[:6]
        assert secret not in seen, secret[:6]


def test_a_wrong_master_key_stops_keyhand_serve_with_a_clear_message(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "KEYHAND_HOME": str(home), "KEYHAND_TEST_MASTER": encode_keys([generate_key()])}
    created = subprocess.run(
        keyhand_cmd("vault", "list"), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert created.returncode == 0, created.stderr  # the vault now exists, sealed with the home's key file
    config = tmp_path / "wrong.yaml"
    config.write_text("vault: {master_key: 'env:KEYHAND_TEST_MASTER'}\n")
    served = subprocess.run(
        keyhand_cmd("--config", str(config), "serve", "--port", "0"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert served.returncode == 2
    assert "does not open the vault" in served.stderr and "vault.master_key" in served.stderr
    assert "Traceback" not in served.stderr and "MCP endpoint" not in served.stdout
