"""The credential store on a real SQLite file with real encryption."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from tests.vault_fixtures import key_source, store_fixture  # noqa: F401  # a fixture, used by name
from vault.crypto import generate_key
from vault.errors import AlreadyExists, DecryptionError, InvalidInput, NotFound, WrongMasterKey
from vault.keys import FileSource
from vault.models import Kind, ProviderConfig, TokenSet
from vault.secret import Secret
from vault.settings import VaultSettings
from vault.store import VaultStore

pytestmark = pytest.mark.anyio

SECRETS = ["bearer-Zq81-secret", "apikey-Wm02-secret", "basicpw-Xy77-secret", "oauth-At55-secret", "oauth-Rt66-secret"]


async def fill(store: VaultStore) -> None:
    await store.providers.add(
        ProviderConfig("p", "https://p.example/auth", "https://p.example/token", "cid"), Secret("client-Cs99-secret")
    )
    await store.add_bearer("tracker", Secret(SECRETS[0]), owner="alice")
    await store.add_api_key("search", Secret(SECRETS[1]), header="X-Search-Key")
    await store.add_basic("legacy", "svc", Secret(SECRETS[2]), owner="bob")
    tokens = TokenSet(Secret(SECRETS[3]), Secret(SECRETS[4]), expires_at=4102444800.0, scopes=("read",))
    await store.put_oauth2("docs", tokens, provider="p", owner="alice")


async def test_every_kind_roundtrips_through_get_for_use(store: VaultStore) -> None:
    await fill(store)
    assert (await store.get_for_use("tracker", "alice")).header()[1].reveal() == f"Bearer {SECRETS[0]}"
    name, value = (await store.get_for_use("search", "alice")).header()
    assert (name, value.reveal()) == ("X-Search-Key", SECRETS[1])
    basic = (await store.get_for_use("legacy", "bob")).header()[1].reveal()
    assert base64.b64decode(basic.removeprefix("Basic ")).decode() == f"svc:{SECRETS[2]}"
    docs = await store.get_for_use("docs", "alice")
    assert docs.secret.reveal() == SECRETS[3] and docs.info.kind is Kind.OAUTH2 and docs.info.scopes == ("read",)


async def test_a_principals_own_credential_shadows_the_shared_one(store: VaultStore) -> None:
    await store.add_bearer("tracker", Secret("shared-token"))
    await store.add_bearer("tracker", Secret("alice-token"), owner="alice")
    assert (await store.get_for_use("tracker", "alice")).secret.reveal() == "alice-token"
    assert (await store.get_for_use("tracker", "bob")).secret.reveal() == "shared-token"


async def test_another_principals_credential_is_not_found(store: VaultStore) -> None:
    await store.add_bearer("tracker", Secret("alice-token"), owner="alice")
    with pytest.raises(NotFound):
        await store.get_for_use("tracker", "bob")


async def test_a_second_credential_with_the_same_name_and_owner_is_refused(store: VaultStore) -> None:
    await store.add_bearer("tracker", Secret("one"), owner="alice")
    with pytest.raises(AlreadyExists):
        await store.add_bearer("tracker", Secret("two"), owner="alice")


@pytest.mark.parametrize("value", ["", "line\r\nX-Injected: 1"])
async def test_empty_secrets_and_secrets_that_would_inject_headers_are_refused(store: VaultStore, value: str) -> None:
    with pytest.raises(InvalidInput):
        await store.add_bearer("tracker", Secret(value))


async def test_listings_never_contain_a_secret(store: VaultStore) -> None:
    await fill(store)
    listed = await store.list_credentials()
    assert {i.name for i in listed} == {"tracker", "search", "legacy", "docs"}
    text = repr(listed) + repr(await store.providers.list()) + repr(await store.list_credentials("alice"))
    for secret in [*SECRETS, "client-Cs99-secret"]:
        assert secret not in text
    assert {i.name for i in await store.list_credentials("alice")} == {"tracker", "search", "docs"}


async def test_the_raw_database_and_wal_hold_no_plaintext_secret(store: VaultStore, tmp_path: Path) -> None:
    await fill(store)
    await store.get_for_use("docs", "alice")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keyhand.db"))
    assert len(raw) > 0 and (tmp_path / "keyhand.db-wal").exists()
    for secret in [*SECRETS, "client-Cs99-secret"]:
        for form in (secret.encode(), base64.b64encode(secret.encode()), secret.encode("utf-16-le")):
            assert form not in raw


async def test_a_ciphertext_moved_to_another_row_fails_to_open(store: VaultStore, tmp_path: Path) -> None:
    await store.add_bearer("a", Secret("token-a"), owner="alice")
    await store.add_bearer("b", Secret("token-b"), owner="alice")
    with sqlite3.connect(tmp_path / "keyhand.db") as db:
        db.execute(
            "UPDATE vault_credentials SET (key_id, wrapped_key, ciphertext) = "
            "(SELECT key_id, wrapped_key, ciphertext FROM vault_credentials WHERE name = 'a') WHERE name = 'b'"
        )
        db.execute("UPDATE vault_meta SET value = value + 1")
    store.invalidate()
    with pytest.raises(DecryptionError):
        await store.get_for_use("b", "alice")
    assert (await store.get_for_use("a", "alice")).secret.reveal() == "token-a"


async def test_a_tampered_ciphertext_fails_with_decryption_error(store: VaultStore, tmp_path: Path) -> None:
    await store.add_bearer("a", Secret("token-a"))
    with sqlite3.connect(tmp_path / "keyhand.db") as db:
        (blob,) = db.execute("SELECT ciphertext FROM vault_credentials").fetchone()
        flipped = bytes([*blob[:-1], blob[-1] ^ 1])
        db.execute("UPDATE vault_credentials SET ciphertext = ?", (flipped,))
        db.execute("UPDATE vault_meta SET value = value + 1")
    store.invalidate()
    with pytest.raises(DecryptionError):
        await store.get_for_use("a", None)
    assert await store.all_secret_values(None) == ()  # what cannot open cannot leak; nothing else breaks


async def test_a_wrong_master_key_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    async with await VaultStore.open(tmp_path / "keyhand.db", key_source()) as first:
        await first.add_bearer("a", Secret("token-a"))
        sealed_with = first.key_ids[0]
    with pytest.raises(WrongMasterKey, match=f"sealed with master key {sealed_with}"):
        await VaultStore.open(tmp_path / "keyhand.db", key_source())


async def test_rotation_keeps_everything_readable_by_this_and_other_processes(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    first = await VaultStore.open(tmp_path / "keyhand.db", FileSource(key_file, create=True))
    other = await VaultStore.open(tmp_path / "keyhand.db", FileSource(key_file), VaultSettings(cache_recheck_s=0))
    await fill(first)
    old_id = first.key_ids[0]
    report = await first.rotate_key()
    assert report.retired_key_ids == (old_id,) and report.rewrapped == 6 and first.key_ids == (report.primary_key_id,)
    assert FileSource(key_file).load().ids == (report.primary_key_id,)
    await first.add_bearer("after", Secret("token-after"))  # the other store sees rows under the new key...
    assert (await other.get_for_use("after", None)).secret.reveal() == "token-after"
    assert (await other.get_for_use("tracker", "alice")).secret.reveal() == SECRETS[0]
    await first.close()
    await other.close()
    async with await VaultStore.open(tmp_path / "keyhand.db", FileSource(key_file)) as reopened:
        assert (await reopened.get_for_use("docs", "alice")).secret.reveal() == SECRETS[3]
        assert (await reopened.providers.client_secret("p"))[1] == Secret("client-Cs99-secret")


async def test_rotation_with_an_env_key_completes_a_rotation_the_operator_started(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    async with await VaultStore.open(tmp_path / "keyhand.db", key_source([old])) as first:
        await first.add_bearer("a", Secret("token-a"))
    async with await VaultStore.open(tmp_path / "keyhand.db", key_source([new, old])) as second:
        report = await second.rotate_key()
        assert report.rewrapped == 2 and "remove the old key" in report.message
    async with await VaultStore.open(tmp_path / "keyhand.db", key_source([new])) as third:
        assert (await third.get_for_use("a", None)).secret.reveal() == "token-a"


async def test_redaction_values_cover_own_shared_and_provider_secrets_only(store: VaultStore) -> None:
    await fill(store)
    values = {s.reveal() for s in await store.all_secret_values("alice")}
    assert {SECRETS[0], SECRETS[1], SECRETS[3], SECRETS[4], "client-Cs99-secret"} <= values
    assert SECRETS[2] not in values  # bob's
    assert f"svc:{SECRETS[2]}" in {s.reveal() for s in await store.all_secret_values("bob")}
    await store.add_bearer("new", Secret("fresh-token"), owner="alice")
    assert "fresh-token" in {s.reveal() for s in await store.all_secret_values("alice")}


async def test_a_write_by_another_process_is_noticed(tmp_path: Path) -> None:
    source = key_source()
    settings = VaultSettings(cache_recheck_s=0)
    async with (
        await VaultStore.open(tmp_path / "k.db", source, settings) as a,
        await VaultStore.open(tmp_path / "k.db", source, settings) as b,
    ):
        await a.list_credentials()
        await b.add_bearer("x", Secret("token-x"))
        assert [i.name for i in await a.list_credentials()] == ["x"]
        await b.delete_credential("x", owner=None)
        with pytest.raises(NotFound):
            await a.get_for_use("x", None)


async def test_providers_keep_their_client_secret_sealed_and_updatable(store: VaultStore) -> None:
    config = ProviderConfig("p", "https://p.example/auth", "https://p.example/token", "cid", default_scopes=("a",))
    info = await store.providers.add(config, Secret("cs-1"))
    assert info.has_client_secret and info.config == config
    with pytest.raises(AlreadyExists):
        await store.providers.add(config)
    await store.providers.update(ProviderConfig("p", "https://p.example/a2", "https://p.example/token", "cid"))
    provider, secret = await store.providers.client_secret("p")
    assert provider.config.authorization_url.endswith("/a2") and secret == Secret("cs-1")
    await store.providers.delete("p")
    with pytest.raises(NotFound):
        await store.providers.get("p")
