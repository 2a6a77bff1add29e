"""Who is calling: API keys (stored hashed) and the principals they stand for.

A principal is named by its API key's name: sessions and credentials belong to
that name, so a key can be rotated (revoke, create again with the same name)
without losing them. Admin keys see everything. With ``--no-auth`` every request
is the single ``local`` principal (only allowed on a loopback address).

Keys are 256-bit random tokens, so a plain SHA-256 is the right hash (no
password stretching needed); lookups are by hash, compared in constant time by
the index itself never seeing the key.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from gateway.db import Database
from gateway.errors import Conflict, NotFound, Unauthorized
from gateway.ledger import now_ts

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    admin      INTEGER NOT NULL,
    profile    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys (name);
"""

KEY_PREFIX = "kh_"
CACHE_TTL_S = 2.0  # a revoked key stops working within this many seconds


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    admin: bool
    profile: str = "default"


LOCAL = Principal(name="local", admin=True)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    prefix: str
    admin: bool
    profile: str
    created_at: str
    revoked_at: str | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Create, list, revoke and resolve API keys."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def create_sync(self, name: str, *, admin: bool = False, profile: str = "default") -> str:
        """Create a key and return it; only its hash is stored, so this is the one time it is seen."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise Conflict("a key name is 1-64 letters, digits, '-' or '_'")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = (
            "key_" + secrets.token_hex(6),
            name,
            hash_key(key),
            key[:8],
            int(admin),
            profile,
            now_ts(),
        )

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, name, hash, prefix, admin, profile, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        self.db.write_sync(insert)
        return key

    def list_sync(self) -> list[KeyInfo]:
        rows = self.db.read_sync(
            lambda c: c.execute(
                "SELECT id, name, prefix, admin, profile, created_at, revoked_at FROM api_keys ORDER BY created_at"
            ).fetchall()
        )
        return [KeyInfo(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in rows]

    def revoke_sync(self, key_id_or_name: str) -> int:
        """Revoke a key by id, or every active key of a name; returns how many were revoked."""

        def revoke(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                (now_ts(), key_id_or_name, key_id_or_name),
            )
            return cur.rowcount

        count = self.db.write_sync(revoke)
        if count == 0:
            raise NotFound(f"no active API key with id or name {key_id_or_name!r}")
        self._cache.clear()
        return count

    async def resolve(self, key: str) -> Principal:
        """The principal of a presented key, or :class:`Unauthorized`."""
        digest = hash_key(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CACHE_TTL_S:
            principal = cached[1]
        else:
            principal = await self.db.read(lambda c: _lookup(c, digest))
            self._cache[digest] = (now, principal)
        if principal is None:
            raise Unauthorized("unknown or revoked API key")
        return principal


def _lookup(conn: sqlite3.Connection, digest: str) -> Principal | None:
    row = conn.execute(
        "SELECT name, admin, profile FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (digest,)
    ).fetchone()
    return Principal(row[0], bool(row[1]), row[2]) if row else None


def bearer_token(conn: HTTPConnection) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`Unauthorized`."""
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send your Keyhand API key as 'Authorization: Bearer <key>'")
    return token.strip()
