"""AES-256-GCM envelope encryption: a fresh data key per sealed value, wrapped by a master key.

Why envelope rather than sealing every value with the master key directly:
rotating the master key then re-wraps 32-byte data keys (one small write per
row) instead of re-encrypting every payload, and the master key touches only
key material, never user data. Each :class:`Envelope` records the id of the
master key that wrapped its data key, so during a rotation rows under the old
and the new key open side by side (the :class:`KeySet` holds both until the
last row is re-wrapped).

Both layers are bound by AES-GCM associated data to *where* the value lives
(table, row id, owner; see :func:`row_aad`): a ciphertext copied into another
row, or another owner's row, fails its tag check. Every failure to open raises
:class:`~vault.errors.DecryptionError`; GCM never returns garbage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import DecryptionError, MasterKeyError, UnknownKeyId

KEY_BYTES = 32
_NONCE_BYTES = 12
_WRAP_LABEL = b"keyhand/dek/v1"


def key_id(key: bytes) -> str:
    """A stable, non-secret name for a master key (HMAC of a label; reveals nothing of the key)."""
    return hmac.new(key, b"keyhand/key-id/v1", hashlib.sha256).hexdigest()[:16]


def generate_key() -> bytes:
    """A new random 256-bit master key."""
    return secrets.token_bytes(KEY_BYTES)


def encode_keys(keys: list[bytes]) -> str:
    """Key material as text: base64url keys, one a line, the first the primary."""
    return "".join(base64.urlsafe_b64encode(k).decode().rstrip("=") + "\n" for k in keys)


def decode_keys(text: str, *, origin: str) -> list[bytes]:
    """Parse key material (base64url keys separated by newlines or commas); never echoes it."""
    tokens = [t for t in text.replace(",", "\n").split() if t]
    if not tokens:
        raise MasterKeyError(f"the master key from {origin} is empty; generate one with `keyhand vault init-key`")
    keys = []
    for token in tokens:
        try:
            key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise MasterKeyError(
                f"the master key from {origin} is not a base64url-encoded 32-byte key; "
                "generate one with `keyhand vault init-key`"
            )
        keys.append(key)
    return keys


def row_aad(table: str, row_id: str, owner: str | None) -> bytes:
    """Associated data that pins a sealed value to its row (JSON: unambiguous, no separators)."""
    return json.dumps([table, row_id, owner], separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A sealed value as stored: master key id, wrapped data key, payload (nonces prefixed)."""

    key_id: str
    wrapped_key: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"Envelope(key_id={self.key_id!r}, {len(self.ciphertext)} bytes)"


class KeySet:
    """The master keys in use: the primary seals, every key opens (old ones kept during rotation)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise MasterKeyError("no master key configured")
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self.primary_id = key_id(keys[0])
        self._material = list(keys)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def material(self) -> list[bytes]:
        """The raw keys, primary first, for a key source to persist. Handle like a secret."""
        return list(self._material)

    def with_primary(self, key: bytes) -> KeySet:
        """A key set whose primary is ``key`` and which still opens everything this one opens."""
        return KeySet([key, *(k for k in self._material if key_id(k) != key_id(key))])

    def __repr__(self) -> str:
        return f"KeySet(primary={self.primary_id!r}, ids={list(self._keys)!r})"

    def seal(self, plaintext: bytes, aad: bytes) -> Envelope:
        """Encrypt under a fresh data key, itself wrapped by the primary master key."""
        dek = AESGCM.generate_key(bit_length=256)
        wrapped = self._wrap(self.primary_id, dek, aad)
        nonce = os.urandom(_NONCE_BYTES)
        return Envelope(self.primary_id, wrapped, nonce + AESGCM(dek).encrypt(nonce, plaintext, aad))

    def open(self, envelope: Envelope, aad: bytes) -> bytes:
        """Decrypt; raises DecryptionError if anything (key, data, row binding) does not match."""
        dek = self._unwrap(envelope, aad)
        nonce, body = envelope.ciphertext[:_NONCE_BYTES], envelope.ciphertext[_NONCE_BYTES:]
        try:
            return AESGCM(dek).decrypt(nonce, body, aad)
        except InvalidTag:
            raise DecryptionError("a sealed value failed its integrity check (tampered or moved)") from None

    def rewrap(self, envelope: Envelope, aad: bytes) -> Envelope:
        """The same payload with its data key wrapped by the primary key (rotation: no re-encryption)."""
        if envelope.key_id == self.primary_id:
            return envelope
        dek = self._unwrap(envelope, aad)
        return Envelope(self.primary_id, self._wrap(self.primary_id, dek, aad), envelope.ciphertext)

    def _wrap(self, kid: str, dek: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._keys[kid].encrypt(nonce, dek, _WRAP_LABEL + aad)

    def _unwrap(self, envelope: Envelope, aad: bytes) -> bytes:
        master = self._keys.get(envelope.key_id)
        if master is None:
            raise UnknownKeyId(
                f"a sealed value is under master key {envelope.key_id}, which is not configured "
                f"(configured: {', '.join(self._keys)})"
            )
        w = envelope.wrapped_key
        try:
            return master.decrypt(w[:_NONCE_BYTES], w[_NONCE_BYTES:], _WRAP_LABEL + aad)
        except InvalidTag:
            raise DecryptionError("a sealed data key failed its integrity check (tampered or moved)") from None
