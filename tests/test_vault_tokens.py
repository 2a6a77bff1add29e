"""OAuth token lifecycle against a real OAuth server process (oauth2-mock-server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.vault_fixtures import (
    REDIRECT_URI,
    OAuthServer,
    authorize_as_browser,
    key_source,
    oauth_server_fixture,  # noqa: F401  # a fixture, used by name
)
from vault.errors import AuthorizationStateError, NeedsReauth, TokenEndpointError
from vault.models import CredentialInfo, Status, TokenSet
from vault.secret import Secret
from vault.settings import VaultSettings
from vault.store import VaultStore

pytestmark = pytest.mark.anyio


class Events(list[tuple[str, dict[str, Any]]]):
    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        self.append((type_, data))

    def types(self) -> list[str]:
        return [t for t, _ in self]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def vault(tmp_path: Path, oauth_server: OAuthServer, events: Events) -> AsyncIterator[VaultStore]:
    async with await VaultStore.open(tmp_path / "keyhand.db", key_source(), VaultSettings(), on_event=events) as v:
        await v.providers.add(oauth_server.provider(), Secret("mock-client-secret"))
        yield v


async def connect(vault: VaultStore, name: str = "docs", owner: str | None = "alice") -> CredentialInfo:
    start = await vault.tokens.begin_connect("mock", name=name, owner=owner, redirect_uri=REDIRECT_URI)
    callback = await asyncio.to_thread(authorize_as_browser, start.url)
    return await vault.tokens.finish_connect(callback["state"], code=callback["code"])


async def expire(vault: VaultStore, info: CredentialInfo) -> TokenSet:
    """Make the stored access token one that has just expired (its refresh token unchanged)."""
    _, tokens = await vault.oauth_tokens(info.id)
    await vault.save_tokens(
        info.id, TokenSet(tokens.access_token, tokens.refresh_token, time.time() - 1, tokens.scopes)
    )
    return tokens


async def test_the_authorization_url_carries_state_s256_challenge_and_resource(vault: VaultStore) -> None:
    start = await vault.tokens.begin_connect(
        "mock", name="docs", owner="alice", redirect_uri=REDIRECT_URI, resource="https://mcp.example.com/mcp"
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    assert query["state"] == start.state and query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43 and query["resource"] == "https://mcp.example.com/mcp"
    assert query["scope"] == "openid tickets:read" and query["redirect_uri"] == REDIRECT_URI


async def test_connecting_with_pkce_stores_a_usable_token_set(vault: VaultStore, events: Events) -> None:
    info = await connect(vault)
    assert info.status is Status.ACTIVE and info.provider == "mock" and info.expires_at
    usable = await vault.get_for_use("docs", "alice")
    assert usable.secret.reveal().count(".") == 2  # the server's signed JWT
    assert events.types() == ["credential.connected"]


async def test_a_replayed_or_unknown_state_is_refused_and_nothing_is_stored(vault: VaultStore) -> None:
    start = await vault.tokens.begin_connect("mock", name="docs", owner="alice", redirect_uri=REDIRECT_URI)
    callback = await asyncio.to_thread(authorize_as_browser, start.url)
    await vault.tokens.finish_connect(callback["state"], code=callback["code"])
    with pytest.raises(AuthorizationStateError):
        await vault.tokens.finish_connect(callback["state"], code=callback["code"])
    with pytest.raises(AuthorizationStateError):
        await vault.tokens.finish_connect("forged-state", code=callback["code"])
    assert [i.name for i in await vault.list_credentials()] == ["docs"]


async def test_a_state_started_by_someone_else_is_refused(vault: VaultStore) -> None:
    start = await vault.tokens.begin_connect(
        "mock", name="docs", owner="alice", redirect_uri=REDIRECT_URI, started_by="alice"
    )
    with pytest.raises(AuthorizationStateError):
        await vault.tokens.finish_connect(start.state, code="x", started_by="mallory")
    assert await vault.list_credentials() == []


async def test_a_just_expired_token_is_refreshed_once_and_persisted(
    vault: VaultStore, oauth_server: OAuthServer, events: Events
) -> None:
    info = await connect(vault)
    old = await expire(vault, info)
    before = oauth_server.token_requests()
    usable = await vault.get_for_use("docs", "alice")
    assert oauth_server.token_requests() == before + 1
    assert usable.info.expires_at and usable.info.expires_at > time.time()
    _, now = await vault.oauth_tokens(info.id)
    assert now.access_token == usable.secret  # persisted (the JWT may equal the old one within the same second)
    assert now.refresh_token is not None and now.refresh_token != old.refresh_token  # the server rotated it
    assert events.types()[-1] == "credential.refreshed"


async def test_200_concurrent_calls_on_a_just_expired_token_send_exactly_one_refresh(
    vault: VaultStore, oauth_server: OAuthServer
) -> None:
    info = await connect(vault)
    await expire(vault, info)
    before = oauth_server.stats()
    results = await asyncio.gather(*(vault.get_for_use("docs", "alice") for _ in range(200)))
    after = oauth_server.stats()
    assert after["requests"]["/token"] - before["requests"]["/token"] == 1
    assert after["grants"]["refresh_token"] - before["grants"].get("refresh_token", 0) == 1
    assert len({r.secret.reveal() for r in results}) == 1


async def test_invalid_grant_marks_needs_reauth_and_says_how_to_reconnect(
    vault: VaultStore, oauth_server: OAuthServer, events: Events
) -> None:
    tokens = TokenSet(Secret("at-unknown"), Secret("rt-never-issued"), time.time() - 1)
    await vault.put_oauth2("docs", tokens, provider="mock", owner="alice")
    with pytest.raises(NeedsReauth, match="keyhand vault connect mock") as caught:
        await vault.get_for_use("docs", "alice")
    assert caught.value.code == "invalid_grant"
    assert (await vault.get_info("docs", "alice")).status is Status.NEEDS_REAUTH
    before = oauth_server.token_requests()
    with pytest.raises(NeedsReauth):
        await vault.get_for_use("docs", "alice")
    assert oauth_server.token_requests() == before  # no request for a credential known to be dead
    assert events[-1][0] == "credential.failed"
    assert events[-1][1] | {"id": None} == {
        "credential": "docs",
        "id": None,
        "code": "invalid_grant",
        "needs_reauth": True,
    }


async def test_reconnecting_a_credential_that_needs_reauth_makes_it_active(vault: VaultStore) -> None:
    await vault.put_oauth2(
        "docs", TokenSet(Secret("a"), Secret("rt-dead"), time.time() - 1), provider="mock", owner="alice"
    )
    with pytest.raises(NeedsReauth):
        await vault.get_for_use("docs", "alice")
    info = await connect(vault)
    assert info.status is Status.ACTIVE and (await vault.get_for_use("docs", "alice")).secret.reveal() != "a"


async def test_a_failing_token_endpoint_is_a_clear_error_that_leaves_the_credential_active(
    vault: VaultStore, oauth_server: OAuthServer, events: Events
) -> None:
    info = await connect(vault)
    await expire(vault, info)
    oauth_server.fail_next_token_request(503)
    with pytest.raises(TokenEndpointError, match="HTTP 503"):
        await vault.get_for_use("docs", "alice")
    assert (await vault.get_info("docs", "alice")).status is Status.ACTIVE
    assert events[-1][0] == "credential.failed" and events[-1][1]["code"] == "503"
    assert (await vault.get_for_use("docs", "alice")).info.expires_at  # the next call refreshes


async def test_revoking_calls_the_revocation_endpoint_and_deletes(vault: VaultStore, oauth_server: OAuthServer) -> None:
    await connect(vault)
    before = oauth_server.stats()["requests"].get("/revoke", 0)
    await vault.tokens.revoke("docs", owner="alice")
    assert oauth_server.stats()["requests"]["/revoke"] == before + 2  # refresh token, then access token
    assert await vault.list_credentials() == []


async def test_no_event_and_no_error_carries_a_token_value(
    vault: VaultStore, oauth_server: OAuthServer, events: Events
) -> None:
    info = await connect(vault)
    await expire(vault, info)
    await vault.get_for_use("docs", "alice")
    oauth_server.fail_next_token_request(500)
    values = [s.reveal() for s in await vault.all_secret_values("alice")]
    text = repr(events)
    try:
        await vault.tokens.refresh("docs", owner="alice")
    except TokenEndpointError as exc:
        text += str(exc)
    assert values and not any(v in text for v in values)
