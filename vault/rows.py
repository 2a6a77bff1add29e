"""The vault's tables (prefixed ``vault_`` in the gateway's shared SQLite file) and row mapping.

Secrets live only in the sealed columns (``key_id``, ``wrapped_key``,
``ciphertext``); everything else is metadata that listings may show. Shared
credentials are stored with ``owner = ''`` so that ``UNIQUE (owner, name)``
holds for them too (SQLite treats NULLs as distinct).
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from vault.crypto import Envelope
from vault.errors import InvalidInput
from vault.models import SHARED, AuthMethod, CredentialInfo, Kind, ProviderConfig, ProviderInfo, Status

SCHEMA = """
CREATE TABLE IF NOT EXISTS vault_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO vault_meta (key, value) VALUES ('generation', 0);
CREATE TABLE IF NOT EXISTS vault_keycheck (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    key_id      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    ciphertext  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vault_credentials (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    expires_at  REAL,
    scopes      TEXT NOT NULL DEFAULT '[]',
    header      TEXT,
    provider    TEXT,
    resource    TEXT,
    key_id      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS vault_providers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    authorization_url TEXT NOT NULL,
    token_url         TEXT NOT NULL,
    revocation_url    TEXT,
    client_id         TEXT NOT NULL,
    default_scopes    TEXT NOT NULL DEFAULT '[]',
    auth_method       TEXT NOT NULL,
    key_id            TEXT,
    wrapped_key       BLOB,
    ciphertext        BLOB,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);
"""

CREDENTIALS_TABLE = "vault_credentials"
PROVIDERS_TABLE = "vault_providers"
CHECK_TABLE = "vault_keycheck"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # RFC 9110 §5.6.2 token


def check_name(name: str, what: str = "credential") -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"{what} name {name[:64]!r} is not valid: use letters, digits and . _ : - (at most 128)")
    return name


def check_header(header: str) -> str:
    if not _HEADER.match(header):
        raise InvalidInput(f"header name {header[:64]!r} is not a valid HTTP header name")
    return header


def check_secret_text(value: str, what: str) -> None:
    """Secrets go into HTTP headers: they must be non-empty and free of control characters."""
    if not value:
        raise InvalidInput(f"the {what} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(f"the {what} contains control characters (a newline?); they are not allowed")


def owner_key(owner: str | None) -> str:
    """The stored form of an owner: '' for shared."""
    if owner is None or owner == SHARED:
        return ""
    if not owner.strip():
        raise InvalidInput("owner must be a principal id or 'shared'")
    return owner


def envelope_of(row: sqlite3.Row) -> Envelope | None:
    if row["key_id"] is None:
        return None
    return Envelope(row["key_id"], bytes(row["wrapped_key"]), bytes(row["ciphertext"]))


def credential_info(row: sqlite3.Row) -> CredentialInfo:
    return CredentialInfo(
        id=row["id"],
        name=row["name"],
        kind=Kind(row["kind"]),
        owner=row["owner"] or None,
        status=Status(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        scopes=tuple(json.loads(row["scopes"])),
        header=row["header"],
        provider=row["provider"],
        resource=row["resource"],
    )


def provider_info(row: sqlite3.Row) -> ProviderInfo:
    config = ProviderConfig(
        name=row["name"],
        authorization_url=row["authorization_url"],
        token_url=row["token_url"],
        client_id=row["client_id"],
        revocation_url=row["revocation_url"],
        default_scopes=tuple(json.loads(row["default_scopes"])),
        token_endpoint_auth_method=AuthMethod(row["auth_method"]),
    )
    return ProviderInfo(
        id=row["id"],
        config=config,
        has_client_secret=row["key_id"] is not None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def provider_columns(config: ProviderConfig) -> dict[str, Any]:
    check_name(config.name, "provider")
    for label, url in (("authorization", config.authorization_url), ("token", config.token_url)):
        if not url.startswith(("https://", "http://")):
            raise InvalidInput(f"provider {config.name}: the {label} URL must be an http(s) URL")
    if not config.client_id:
        raise InvalidInput(f"provider {config.name}: client_id is empty")
    return {
        "name": config.name,
        "authorization_url": config.authorization_url,
        "token_url": config.token_url,
        "revocation_url": config.revocation_url,
        "client_id": config.client_id,
        "default_scopes": json.dumps(list(config.default_scopes)),
        "auth_method": AuthMethod(config.token_endpoint_auth_method).value,
    }
