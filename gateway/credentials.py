"""The pipeline's credential step: from a tool's binding to a secret fetcher, via the vault.

The credential is chosen by the session's principal (their own first, then a
shared one). The grant handed to the tool holds no secret: it holds a function
that opens the credential at send time (refreshing an OAuth token that expires
soon, or on demand after a 401). ``credential.used`` is logged with the name and
id, never the value. No usable credential is a refusal that says how to connect
one, unless the binding allows calling without.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from gateway.auth import Principal
from gateway.config import Inject
from gateway.injection import render
from gateway.ledger import Ledger
from gateway.redact import LOG_SCRUBBER, Redactor
from vault import errors as vault_errors
from vault.models import Kind, UsableCredential
from vault.secret import Secret
from vault.store import VaultStore

log = logging.getLogger("keyhand.vault")

current_session: ContextVar[str | None] = ContextVar("keyhand_current_session", default=None)
"""The session whose call is running, so vault events (a refresh it caused) land in its ledger."""


class VaultEvents:
    """The vault's event hook: log every token-lifecycle event; append it to the current session's ledger."""

    def __init__(self) -> None:
        self.ledger: Ledger | None = None
        self._pending: set[asyncio.Task[object]] = set()

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        log.info("%s %s", type_, data)  # the vault's event data never holds a secret value
        session_id = current_session.get()
        if session_id is None or self.ledger is None:
            return
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(self.ledger.append(session_id, type_, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


class CredentialRefused(Exception):
    """No usable credential for this call; the message says how to get one."""


@dataclass(frozen=True)
class Grant:
    """What the credential step hands a tool: a connection key and a secret fetcher (no secret)."""

    key: str
    fetch: Callable[[bool], Awaitable[str]]
    header: str


def header_value(usable: UsableCredential, inject: Inject) -> tuple[str, str]:
    """The header name and value for this credential and binding."""
    default_name, default_value = usable.header()
    name = inject.header or default_name
    if inject.format is None:
        return name, default_value.reveal()
    return name, render(inject.format, usable.secret.reveal(), usable.username)


class Credentials:
    """Binds tool calls to vault credentials."""

    def __init__(self, store: VaultStore, ledger: Ledger) -> None:
        self.store = store
        self.ledger = ledger
        self._redactors: dict[tuple[tuple[str, Secret], ...], Redactor] = {}

    async def grant(
        self, credential: str, inject: Inject, principal: Principal, session_id: str | None, *, optional: bool
    ) -> Grant | None:
        if session_id is not None:
            current_session.set(session_id)
        try:
            usable = await self.store.get_for_use(credential, principal.name)
        except vault_errors.NotFound:
            if optional:
                return None
            raise CredentialRefused(
                f"no credential {credential!r} is connected for you: ask an admin to add it "
                f"(`keyhand vault add {credential} --kind bearer --owner {principal.name}`) or to connect it "
                f"(POST /v1/admin/connections)"
            ) from None
        except vault_errors.NeedsReauth:
            if optional:
                return None
            raise CredentialRefused(
                f"the credential {credential!r} must be reconnected (its grant was revoked or expired): "
                f"run `keyhand vault connect` for it again"
            ) from None
        except vault_errors.TokenError as exc:
            raise CredentialRefused(f"the credential {credential!r} could not be refreshed: {exc}") from None
        info = usable.info
        if session_id is not None:
            await self.ledger.append(
                session_id, "credential.used", {"name": info.name, "id": info.id, "kind": info.kind.value}
            )
        name, _ = header_value(usable, inject)

        async def fetch(force_refresh: bool) -> str:
            if force_refresh and info.kind is Kind.OAUTH2:
                await self.store.tokens.refresh(info.name, owner=info.owner)
            fresh = await self.store.get_for_use(credential, principal.name)
            if inject.env:
                return fresh.secret.reveal()
            return header_value(fresh, inject)[1]

        return Grant(key=info.id, fetch=fetch, header=name)

    async def redactor(self, principal: Principal) -> Redactor:
        """The redactor for this principal's scope, built once per distinct set of secrets."""
        secrets = await self.store.named_secret_values(principal.name)
        redactor = self._redactors.get(secrets)
        if redactor is None:
            if len(self._redactors) > 256:
                self._redactors.clear()
            pairs = [(name, s.reveal()) for name, s in secrets]
            redactor = self._redactors[secrets] = Redactor(pairs)
            LOG_SCRUBBER.learn(pairs)
        return redactor
