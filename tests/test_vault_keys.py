"""Master key sources: viability, refusal of anything insecure, the embedded default."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null
from pydantic import ValidationError

from vault.crypto import KeySet, encode_keys, generate_key, key_id
from vault.errors import InsecureKeyFile, MasterKeyError
from vault.keys import EnvSource, FailSource, FileSource, KeyringSource, select_source
from vault.settings import VaultSettings


class MemoryKeyring(KeyringBackend):
    """A real keyring backend (as keyring's own test suite writes them) that keeps entries in memory.

    Its constructor takes an argument so that keyring's auto-discovery (which
    builds backends without arguments) never picks it for anyone else.
    """

    priority = 5  # type: ignore[assignment]  # keyring declares it as a classproperty

    def __init__(self, entries: dict[tuple[str, str], str]) -> None:
        super().__init__()
        self.entries = entries

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


def write_key_file(path: Path, mode: int, keys: list[bytes] | None = None) -> Path:
    path.write_text(encode_keys(keys or [generate_key()]))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused_with_the_chmod_to_run(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "master.key", mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        FileSource(path).load()
    assert not FileSource(path).viable().ok


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_file_is_loaded(tmp_path: Path, mode: int) -> None:
    key = generate_key()
    path = write_key_file(tmp_path / "master.key", mode, [key])
    assert FileSource(path).load().primary_id == key_id(key)


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    target = write_key_file(tmp_path / "real.key", 0o600)
    (tmp_path / "link.key").symlink_to(target)
    with pytest.raises(MasterKeyError):
        FileSource(tmp_path / "link.key").load()


def test_a_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        FileSource(tmp_path / "nope.key").load()


def test_the_headless_default_creates_a_0600_key_file_in_home_and_says_so(tmp_path: Path) -> None:
    source = FileSource(tmp_path / "home" / "master.key", create=True)
    keys = source.load()
    path = tmp_path / "home" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert source.notice is not None and str(path) in source.notice and "0600" in source.notice
    assert FileSource(path).load().primary_id == keys.primary_id  # the next start reads the same key


def test_the_default_prefers_an_existing_key_file_over_anything_else(tmp_path: Path) -> None:
    write_key_file(tmp_path / "master.key", 0o600)
    source = select_source(None, tmp_path)
    assert isinstance(source, FileSource) and not source.create


def test_on_a_machine_without_a_secure_keyring_the_default_is_a_new_key_file(tmp_path: Path) -> None:
    if KeyringSource().viable().ok:
        pytest.skip("this machine has a secure OS keyring")
    source = select_source(None, tmp_path)
    assert isinstance(source, FileSource) and source.create


@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring()])
def test_keyring_backends_that_do_not_protect_secrets_are_not_viable(backend: KeyringBackend) -> None:
    source = KeyringSource(backend=backend)
    verdict = source.viable()
    assert not verdict.ok and "env:VAR" in verdict.reason
    with pytest.raises(MasterKeyError):
        source.load()


def test_a_secure_keyring_backend_holds_a_key_created_once() -> None:
    backend = MemoryKeyring({})
    first = KeyringSource(backend=backend)
    keys = first.load()
    assert first.notice is not None and "keyring" in first.notice
    assert KeyringSource(backend=backend).load().primary_id == keys.primary_id


def test_an_unset_environment_variable_is_a_clear_error() -> None:
    with pytest.raises(MasterKeyError, match="KEYHAND_KEY"):
        EnvSource("KEYHAND_KEY", {}).load()


def test_a_malformed_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(MasterKeyError) as caught:
        EnvSource("K", {"K": "not-a-key-but-maybe-a-password"}).load()
    assert "maybe-a-password" not in str(caught.value)


def test_several_keys_in_the_material_are_the_primary_and_the_retiring_ones() -> None:
    new, old = generate_key(), generate_key()
    keys = EnvSource("K", {"K": encode_keys([new, old]).replace("\n", ",")}).load()
    assert keys.primary_id == key_id(new) and keys.ids == (key_id(new), key_id(old))


def test_the_fail_source_refuses_every_call_with_its_reason() -> None:
    source = FailSource("the vault is locked: set vault.master_key")
    assert not source.viable().ok
    with pytest.raises(MasterKeyError, match="locked"):
        source.load()
    with pytest.raises(MasterKeyError, match="locked"):
        source.save(KeySet([generate_key()]))


def test_an_unknown_master_key_form_fails_closed_without_echoing_it(tmp_path: Path) -> None:
    source = select_source("c2VjcmV0LWtleS1tYXRlcmlhbA", tmp_path)
    assert isinstance(source, FailSource) and "c2VjcmV0" not in source.reason


def test_settings_reject_unknown_fields_and_bad_key_forms_without_echoing_them() -> None:
    with pytest.raises(ValidationError):
        VaultSettings.model_validate({"master_key": "keyring", "plaintext_fallback": True})
    with pytest.raises(ValidationError) as caught:
        VaultSettings.model_validate({"master_key": "c2VjcmV0LWtleS1tYXRlcmlhbA"})
    assert "c2VjcmV0" not in str(caught.value)
    assert VaultSettings.model_validate({"master_key": "env:KEYHAND_MASTER_KEY"}).master_key


def test_every_settings_field_is_described() -> None:
    assert all(f.description for f in VaultSettings.model_fields.values())


def test_rotation_saves_atomically_and_keeps_the_file_private(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "master.key", 0o600)
    source = FileSource(path)
    rotated = source.load().with_primary(generate_key())
    source.save(rotated)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert FileSource(path).load().ids == rotated.ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]
