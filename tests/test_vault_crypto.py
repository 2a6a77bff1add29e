"""Sealing, opening, binding to a row, tampering, and the Secret type."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from vault.crypto import Envelope, KeySet, generate_key, row_aad
from vault.errors import DecryptionError, UnknownKeyId
from vault.secret import Secret

AAD = row_aad("vault_credentials", "cred_1", "alice")


def test_a_sealed_value_opens_with_the_same_row_binding() -> None:
    keys = KeySet([generate_key()])
    assert keys.open(keys.seal(b"tok-123", AAD), AAD) == b"tok-123"


@pytest.mark.parametrize(
    "other_row",
    [
        ("vault_credentials", "cred_2", "alice"),
        ("vault_credentials", "cred_1", "bob"),
        ("vault_providers", "cred_1", None),
    ],
)
def test_a_ciphertext_moved_to_another_row_fails_to_open(other_row: tuple[str, str, str | None]) -> None:
    keys = KeySet([generate_key()])
    sealed = keys.seal(b"tok-123", AAD)
    with pytest.raises(DecryptionError):
        keys.open(sealed, row_aad(*other_row))


@pytest.mark.parametrize("part", ["ciphertext", "wrapped_key"])
def test_a_tampered_ciphertext_raises_decryption_error_not_garbage(part: str) -> None:
    keys = KeySet([generate_key()])
    sealed = keys.seal(b"tok-123", AAD)
    blob = bytearray(getattr(sealed, part))
    blob[-1] ^= 0x01
    fields = {"key_id": sealed.key_id, "wrapped_key": sealed.wrapped_key, "ciphertext": sealed.ciphertext}
    tampered = Envelope(**(fields | {part: bytes(blob)}))
    with pytest.raises(DecryptionError):
        keys.open(tampered, AAD)


def test_a_value_sealed_under_an_unconfigured_key_names_the_key_id() -> None:
    sealed = KeySet([generate_key()]).seal(b"x", AAD)
    with pytest.raises(UnknownKeyId, match=sealed.key_id):
        KeySet([generate_key()]).open(sealed, AAD)


def test_rewrapping_under_a_new_primary_keeps_the_payload_and_drops_the_old_key() -> None:
    old, new = generate_key(), generate_key()
    sealed = KeySet([old]).seal(b"tok-123", AAD)
    rewrapped = KeySet([old]).with_primary(new).rewrap(sealed, AAD)
    assert rewrapped.ciphertext == sealed.ciphertext
    assert KeySet([new]).open(rewrapped, AAD) == b"tok-123"


def test_key_ids_and_envelope_reprs_reveal_no_key_material() -> None:
    key = generate_key()
    keys = KeySet([key])
    sealed = keys.seal(b"tok-123", AAD)
    assert key.hex() not in keys.primary_id and key.hex()[:16] != keys.primary_id
    assert "tok" not in repr(sealed) and key.hex() not in repr(keys)


def test_a_secret_prints_as_stars_everywhere() -> None:
    secret = Secret("hunter2-token")
    assert str(secret) == "****" and f"{secret}" == "****" and f"{secret!r}" == "Secret('****')"
    assert "hunter2" not in repr([secret]) and "hunter2" not in str({"k": secret})
    assert secret.reveal() == "hunter2-token"


def test_a_secret_cannot_be_pickled_or_json_encoded_by_accident() -> None:
    secret = Secret("hunter2-token")
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        json.dumps({"token": secret})
    assert copy.deepcopy(secret) is secret


def test_secrets_compare_by_value_and_are_immutable() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    with pytest.raises(AttributeError):
        Secret("a")._value = "b"  # type: ignore[misc]  # proving the guard
