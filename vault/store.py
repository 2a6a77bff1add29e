"""The credential store: sealed rows in the gateway's SQLite file, opened only for use.

:class:`VaultStore` opens its own aiosqlite connection to the shared file (WAL,
``synchronous=NORMAL``, a busy timeout so it waits for the ledger's writer) and
creates its own ``vault_*`` tables. Its writes are serialised by one lock and
each runs in a ``BEGIN IMMEDIATE`` transaction that also bumps a generation
counter.

Secrets are write-only: every listing returns :class:`~vault.models.CredentialInfo`,
which has no secret field. The only ways out are :meth:`VaultStore.get_for_use`
(one credential, for injection) and :meth:`VaultStore.all_secret_values` (for the
redactor), both returning :class:`~vault.secret.Secret`.

Why a cache: a query through aiosqlite costs a thread hop (~0.3 ms), too much per
tool call. Rows are kept in memory and opened on first use; a write by this
process drops the cache at once, a write by another process is noticed through
the generation counter within ``cache_recheck_s``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from vault import rows
from vault.crypto import Envelope, KeySet, generate_key, row_aad
from vault.errors import AlreadyExists, DecryptionError, NotFound, UnknownKeyId, WrongMasterKey
from vault.keys import KeySource, select_source
from vault.models import CredentialInfo, Kind, Status, TokenSet, UsableCredential
from vault.providers import ProviderTable
from vault.secret import Secret
from vault.settings import VaultSettings
from vault.tokens import TokenLifecycle

EventHook = Callable[[str, dict[str, Any]], None]
"""``on_event(type, data)``: ``credential.refreshed``, ``credential.failed``; data never holds a value."""

_CHECK_PLAINTEXT = b"keyhand vault check v1"
_MAIN_FIELD = {Kind.OAUTH2: "access_token", Kind.BEARER: "token", Kind.API_KEY: "key", Kind.BASIC: "password"}


@dataclass(slots=True)
class _Row:
    info: CredentialInfo
    envelope: Envelope
    payload: dict[str, str] | None = None


@dataclass(slots=True)
class _Snapshot:
    generation: int
    checked_at: float
    rows: dict[tuple[str, str], _Row]
    scope_secrets: dict[str, tuple[tuple[str, Secret], ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What :meth:`VaultStore.rotate_key` did: the key now sealing, rows re-wrapped, what is left."""

    primary_key_id: str
    rewrapped: int
    retired_key_ids: tuple[str, ...]
    message: str


class VaultStore:
    """Encrypted credentials and OAuth providers. Build with :meth:`open`; one per process."""

    def __init__(
        self, db: aiosqlite.Connection, keys: KeySet, source: KeySource, settings: VaultSettings, on_event: EventHook
    ) -> None:
        self._db = db
        self._keys = keys
        self._source = source
        self.settings = settings
        self._snapshot: _Snapshot | None = None
        self._write_lock = asyncio.Lock()
        self.notices: tuple[str, ...] = ()
        """Sentences for the gateway to log at start (where the key came from, a key file created)."""
        self.providers = ProviderTable(self)
        self.tokens = TokenLifecycle(self, settings, on_event)

    @classmethod
    async def open(
        cls,
        db_path: Path,
        source: KeySource | None = None,
        settings: VaultSettings | None = None,
        *,
        home: Path | None = None,
        on_event: EventHook | None = None,
    ) -> VaultStore:
        """Open (creating if needed) the vault in ``db_path``.

        Raises MasterKeyError (no usable key, insecure key file) or WrongMasterKey.
        ``source`` defaults to :func:`vault.keys.select_source` over
        ``settings.master_key`` with ``home`` (default: the db's directory).
        """
        settings = settings or VaultSettings()
        source = source or select_source(settings.master_key, home or db_path.parent)
        keys = source.load()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(db_path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        store = cls(db, keys, source, settings, on_event if on_event is not None else _no_event)
        try:
            for pragma in ("busy_timeout = 5000", "journal_mode = WAL", "synchronous = NORMAL"):
                await db.execute(f"PRAGMA {pragma}")
            async with store._write_lock:
                await db.executescript(rows.SCHEMA)  # idempotent; executescript commits on its own
            await store._verify_check(db_path)
        except BaseException:
            await db.close()
            raise
        store.notices = tuple(n for n in (f"vault master key from {source.description}", source.notice) if n)
        return store

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> VaultStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- credentials -----------------------------------------------------------

    async def add_bearer(self, name: str, token: Secret, *, owner: str | None = None) -> CredentialInfo:
        """Store a static bearer token. Raises AlreadyExists, InvalidInput."""
        return await self._insert(name, Kind.BEARER, owner, {"token": token})

    async def add_api_key(
        self, name: str, key: Secret, *, header: str = "X-API-Key", owner: str | None = None
    ) -> CredentialInfo:
        """Store an API key sent in ``header``. Raises AlreadyExists, InvalidInput."""
        return await self._insert(name, Kind.API_KEY, owner, {"key": key}, header=rows.check_header(header))

    async def add_basic(
        self, name: str, username: str, password: Secret, *, owner: str | None = None
    ) -> CredentialInfo:
        """Store HTTP Basic credentials (RFC 7617). Raises AlreadyExists, InvalidInput."""
        rows.check_secret_text(username, "username")
        return await self._insert(name, Kind.BASIC, owner, {"username": Secret(username), "password": password})

    async def put_oauth2(
        self, name: str, tokens: TokenSet, *, provider: str, owner: str | None = None, resource: str | None = None
    ) -> CredentialInfo:
        """Create, or replace after a reconnect, an OAuth2 credential; its status becomes active."""
        await self.providers.get(provider)
        existing = (await self._snap()).rows.get((rows.owner_key(owner), name))
        meta = {"provider": provider, "resource": resource}
        if existing is None:
            return await self._insert(name, Kind.OAUTH2, owner, _token_payload(tokens), tokens=tokens, **meta)
        if existing.info.kind is not Kind.OAUTH2:
            raise AlreadyExists(f"credential {name!r} exists and is a {existing.info.kind} credential")
        return await self._update_tokens(existing.info.id, tokens, **meta)

    async def delete_credential(self, name: str, *, owner: str | None) -> CredentialInfo:
        """Delete the credential ``name`` of ``owner`` (None: shared). Raises NotFound."""
        row = (await self._snap()).rows.get((rows.owner_key(owner), name))
        if row is None:
            raise NotFound(f"no credential {name!r} owned by {owner or 'shared'}")
        await self.write(lambda c: c.execute("DELETE FROM vault_credentials WHERE id = ?", (row.info.id,)))
        return row.info

    async def list_credentials(self, visible_to: str | None = None) -> list[CredentialInfo]:
        """Every credential (``visible_to=None``, for admins) or those a principal may use."""
        snap = await self._snap()
        keys = None if visible_to is None else {"", rows.owner_key(visible_to)}
        found = [r.info for (owner, _), r in snap.rows.items() if keys is None or owner in keys]
        return sorted(found, key=lambda i: (i.owner or "", i.name))

    async def get_info(self, name: str, principal: str | None) -> CredentialInfo:
        """The credential ``name`` as ``principal`` sees it: their own first, then shared."""
        return self._resolve(await self._snap(), name, principal).info

    async def get_for_use(self, name: str, principal: str | None) -> UsableCredential:
        """Open ``name`` for one outbound call, refreshing an OAuth token that expires soon.

        Resolves the principal's own credential first, then a shared one. Raises
        NotFound, NeedsReauth (reconnect it), TokenEndpointError, DecryptionError.
        """
        row = self._resolve(await self._snap(), name, principal)
        if row.info.kind is Kind.OAUTH2:
            if await self.tokens.ensure_fresh(row.info):
                row = self._resolve(await self._snap(), name, principal)
        return self._usable(row)

    async def all_secret_values(self, principal: str | None) -> tuple[Secret, ...]:
        """Every plaintext a tool result must be scrubbed of for ``principal`` (own, shared, providers)."""
        return tuple(secret for _, secret in await self.named_secret_values(principal))

    async def named_secret_values(self, principal: str | None) -> tuple[tuple[str, Secret], ...]:
        """:meth:`all_secret_values` with the credential name each belongs to (for redaction markers).

        Longest first; cached until the next write (the same tuple object until then,
        so callers may key caches on it). A row that cannot be opened is skipped:
        what cannot be opened cannot be injected, so it cannot leak into a result.
        """
        snap = await self._snap()
        scope = rows.owner_key(principal) if principal else ""
        cached = snap.scope_secrets.get(scope)
        if cached is None:
            found: dict[Secret, str] = {s: "oauth-client" for s in await self.providers.client_secrets()}
            for (owner, _), row in snap.rows.items():
                if owner in ("", scope):
                    found.update((secret, row.info.name) for secret in self._secrets_of(row))
            ordered = sorted(found.items(), key=lambda item: len(item[0]), reverse=True)
            cached = snap.scope_secrets[scope] = tuple((name, secret) for secret, name in ordered)
        return cached

    # -- used by tokens.py ------------------------------------------------------

    async def oauth_tokens(self, credential_id: str) -> tuple[CredentialInfo, TokenSet]:
        """The current info and token set of an OAuth2 credential, read afresh."""
        self.invalidate()
        row = next((r for r in (await self._snap()).rows.values() if r.info.id == credential_id), None)
        if row is None or row.info.kind is not Kind.OAUTH2:
            raise NotFound(f"OAuth2 credential {credential_id} no longer exists")
        payload = self._payload(row)
        refresh = payload.get("refresh_token")
        tokens = TokenSet(
            Secret(payload["access_token"]),
            Secret(refresh) if refresh else None,
            row.info.expires_at,
            row.info.scopes,
        )
        return row.info, tokens

    async def save_tokens(self, credential_id: str, tokens: TokenSet) -> CredentialInfo:
        """Persist a refreshed token set; the credential becomes active."""
        return await self._update_tokens(credential_id, tokens)

    async def mark_needs_reauth(self, credential_id: str) -> None:
        await self.write(
            lambda c: c.execute(
                "UPDATE vault_credentials SET status = ?, updated_at = ? WHERE id = ?",
                (Status.NEEDS_REAUTH.value, time.time(), credential_id),
            )
        )

    # -- keys ------------------------------------------------------------------

    async def rotate_key(self) -> RotationReport:
        """Re-wrap every data key under a new master key while readers keep working.

        With one key configured, a fresh key is generated and saved *with* the
        old one first (a crash leaves both, so everything stays readable); once
        every row is re-wrapped the old key is dropped from the source. With
        several keys configured (``env:VAR`` set to ``NEW,OLD``) the rotation
        already started is completed under the first. Raises MasterKeyError if
        a new key cannot be saved (an env source: set it as NEW,OLD yourself).
        """
        if len(self._keys.ids) == 1:
            staged = self._keys.with_primary(generate_key())
            self._source.save(staged)
            self._keys = staged
        retired = tuple(i for i in self._keys.ids if i != self._keys.primary_id)
        count = await self._rewrap_all()
        final = KeySet(self._keys.material()[:1])
        message = f"all sealed values are under master key {final.primary_id}"
        try:
            self._source.save(final)
        except Exception as exc:  # an env source cannot be rewritten: tell the operator instead
            message += f"; remove the old key(s) from {self._source.description} yourself ({exc})"
        self._keys = final
        return RotationReport(final.primary_id, count, retired, message)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return self._keys.ids

    # -- internals ---------------------------------------------------------------

    async def write(self, fn: Callable[[aiosqlite.Connection], Awaitable[Any]], *, bump: bool = True) -> Any:
        """Run ``fn`` in one serialised write transaction; the cache is dropped after it."""
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                result = await fn(self._db)
                if bump:
                    await self._db.execute("UPDATE vault_meta SET value = value + 1 WHERE key = 'generation'")
                await self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise
            finally:
                self.invalidate()
            return result

    async def fetch(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._db.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    def invalidate(self) -> None:
        self._snapshot = None

    def seal(self, table: str, row_id: str, owner: str | None, payload: dict[str, Secret]) -> Envelope:
        plain = json.dumps({k: v.reveal() for k, v in payload.items()}).encode()
        return self._keys.seal(plain, row_aad(table, row_id, owner))

    def open_sealed(self, table: str, row_id: str, owner: str | None, envelope: Envelope) -> dict[str, str]:
        aad = row_aad(table, row_id, owner)
        try:
            plain = self._keys.open(envelope, aad)
        except UnknownKeyId:
            # another process may have rotated the key: read the source again, once
            self._keys = self._source.load()
            plain = self._keys.open(envelope, aad)
        opened: dict[str, str] = json.loads(plain)
        return opened

    async def _snap(self) -> _Snapshot:
        snap, now = self._snapshot, time.monotonic()
        if snap is not None and now - snap.checked_at < self.settings.cache_recheck_s:
            return snap
        generation = await self._generation()
        if snap is not None and snap.generation == generation:
            snap.checked_at = now
            return snap
        found = await self.fetch("SELECT * FROM vault_credentials")
        by_key = {(r["owner"], r["name"]): _Row(rows.credential_info(r), _envelope(r)) for r in found}
        self._snapshot = _Snapshot(generation, now, by_key)
        return self._snapshot

    async def _generation(self) -> int:
        (row,) = await self.fetch("SELECT value FROM vault_meta WHERE key = 'generation'")
        return int(row["value"])

    def _resolve(self, snap: _Snapshot, name: str, principal: str | None) -> _Row:
        owner = rows.owner_key(principal) if principal else ""
        row = snap.rows.get((owner, name)) or snap.rows.get(("", name))
        if row is None:
            raise NotFound(f"no credential {name!r} is visible to {principal or 'shared scope'}")
        return row

    def _payload(self, row: _Row) -> dict[str, str]:
        if row.payload is None:
            row.payload = self.open_sealed(rows.CREDENTIALS_TABLE, row.info.id, row.info.owner, row.envelope)
        return row.payload

    def _usable(self, row: _Row) -> UsableCredential:
        payload = self._payload(row)
        extra = tuple(Secret(v) for k, v in payload.items() if k == "refresh_token")
        return UsableCredential(row.info, Secret(payload[_MAIN_FIELD[row.info.kind]]), payload.get("username"), extra)

    def _secrets_of(self, row: _Row) -> list[Secret]:
        try:
            payload = self._payload(row)
        except DecryptionError:
            return []
        found = [Secret(v) for k, v in payload.items() if k != "username"]
        if row.info.kind is Kind.BASIC:
            found.append(Secret(f"{payload['username']}:{payload['password']}"))
        return found

    async def _insert(
        self,
        name: str,
        kind: Kind,
        owner: str | None,
        payload: dict[str, Secret],
        *,
        header: str | None = None,
        provider: str | None = None,
        resource: str | None = None,
        tokens: TokenSet | None = None,
    ) -> CredentialInfo:
        rows.check_name(name)
        okey = rows.owner_key(owner)
        for label, value in payload.items():
            rows.check_secret_text(value.reveal(), label.replace("_", " "))
        cred_id, now = "cred_" + secrets.token_hex(8), time.time()
        env = self.seal(rows.CREDENTIALS_TABLE, cred_id, okey or None, payload)
        scopes = json.dumps(list(tokens.scopes)) if tokens else "[]"
        values: tuple[Any, ...] = (cred_id, name, okey, kind.value, Status.ACTIVE.value)
        values += (tokens.expires_at if tokens else None, scopes, header, provider, resource)
        values += (env.key_id, env.wrapped_key, env.ciphertext, now, now)

        async def insert(c: aiosqlite.Connection) -> None:
            if await (await c.execute(_EXISTS, (okey, name))).fetchone():
                raise AlreadyExists(f"credential {name!r} already exists for {okey or 'shared'}")
            await c.execute(_INSERT, values)

        await self.write(insert)
        return (await self._snap()).rows[(okey, name)].info

    async def _update_tokens(self, credential_id: str, tokens: TokenSet, **meta: str | None) -> CredentialInfo:
        found = await self.fetch("SELECT owner, name FROM vault_credentials WHERE id = ?", (credential_id,))
        if not found:
            raise NotFound(f"OAuth2 credential {credential_id} no longer exists")
        row = found[0]
        payload = _token_payload(tokens)
        for label, value in payload.items():
            rows.check_secret_text(value.reveal(), label.replace("_", " "))
        env = self.seal(rows.CREDENTIALS_TABLE, credential_id, row["owner"] or None, payload)
        sets = "status = ?, expires_at = ?, scopes = ?, key_id = ?, wrapped_key = ?, ciphertext = ?, updated_at = ?"
        params: list[Any] = [Status.ACTIVE.value, tokens.expires_at, json.dumps(list(tokens.scopes))]
        params += [env.key_id, env.wrapped_key, env.ciphertext, time.time()]
        for column, meta_value in meta.items():
            sets += f", {column} = ?"
            params.append(meta_value)
        sql = f"UPDATE vault_credentials SET {sets} WHERE id = ?"
        await self.write(lambda c: c.execute(sql, (*params, credential_id)))
        return (await self._snap()).rows[(row["owner"], row["name"])].info

    async def _verify_check(self, db_path: Path) -> None:
        aad = row_aad(rows.CHECK_TABLE, "1", None)
        found = await self.fetch("SELECT key_id, wrapped_key, ciphertext FROM vault_keycheck WHERE id = 1")
        if not found:
            env = self._keys.seal(_CHECK_PLAINTEXT, aad)
            sql = "INSERT INTO vault_keycheck (id, key_id, wrapped_key, ciphertext) VALUES (1, ?, ?, ?)"
            await self.write(lambda c: c.execute(sql, (env.key_id, env.wrapped_key, env.ciphertext)), bump=False)
            return
        env = _envelope(found[0])
        try:
            ok = self._keys.open(env, aad) == _CHECK_PLAINTEXT
        except DecryptionError:
            ok = False
        if not ok:
            raise WrongMasterKey(
                f"the master key from {self._source.description} (id {', '.join(self._keys.ids)}) does not "
                f"open the vault in {db_path}, which was sealed with master key {env.key_id}; configure that "
                "key (vault.master_key) or restore its key file / keyring entry"
            )

    async def _rewrap_all(self) -> int:
        count = 0
        for table in (rows.CREDENTIALS_TABLE, rows.PROVIDERS_TABLE, rows.CHECK_TABLE):
            owner = "owner" if table == rows.CREDENTIALS_TABLE else "NULL AS owner"
            found = await self.fetch(
                f"SELECT id, {owner}, key_id, wrapped_key, ciphertext FROM {table} "
                "WHERE key_id IS NOT NULL AND key_id != ?",
                (self._keys.primary_id,),
            )
            for r in found:
                env = self._keys.rewrap(_envelope(r), row_aad(table, str(r["id"]), r["owner"] or None))
                sql = f"UPDATE {table} SET key_id = ?, wrapped_key = ? WHERE id = ? AND key_id = ?"
                await self.write(_execute(sql, (env.key_id, env.wrapped_key, r["id"], r["key_id"])))
                count += 1
        return count


_EXISTS = "SELECT 1 FROM vault_credentials WHERE owner = ? AND name = ?"
_INSERT = (
    "INSERT INTO vault_credentials (id, name, owner, kind, status, expires_at, scopes, header, provider, "
    "resource, key_id, wrapped_key, ciphertext, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _envelope(row: aiosqlite.Row) -> Envelope:
    env = rows.envelope_of(row)
    if env is None:
        raise DecryptionError("a sealed row has no ciphertext")
    return env


def _no_event(_type: str, _data: dict[str, Any]) -> None:
    pass


def _execute(sql: str, params: tuple[Any, ...]) -> Callable[[aiosqlite.Connection], Awaitable[Any]]:
    async def run(c: aiosqlite.Connection) -> None:
        await c.execute(sql, params)

    return run


def _token_payload(tokens: TokenSet) -> dict[str, Secret]:
    payload = {"access_token": tokens.access_token}
    if tokens.refresh_token:
        payload["refresh_token"] = tokens.refresh_token
    return payload
