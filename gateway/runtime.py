"""The running gateway's parts, opened and closed together.

One object owns the database, the ledger, the session and key stores, the
vault, the upstreams and the toolset, so the HTTP app, the stdio server and the
CLI all build on the same composition, written once here:

    open_stores  database + ledger + sessions + API keys   (sync; what the CLI needs)
    running      + vault + built-in tools + upstreams       (async; what serving needs)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway import auth, ledger, sessions
from gateway.auth import KeyStore, Principal
from gateway.builtin import add_builtin_tools
from gateway.config import Config
from gateway.credentials import Credentials, VaultEvents
from gateway.db import Database
from gateway.http_tools import http_tools
from gateway.ledger import Ledger
from gateway.redact import NO_SECRETS, Redactor
from gateway.sessions import SessionStore
from gateway.toolset import Toolset
from gateway.upstream import Upstreams
from vault.store import VaultStore

log = logging.getLogger("keyhand")

SCHEMAS = [ledger.SCHEMA, sessions.SCHEMA, auth.SCHEMA]


def db_path(home: Path) -> Path:
    return home / "keyhand.db"


def open_database(home: Path) -> Database:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Database(db_path(home), SCHEMAS)


@dataclass
class Runtime:
    config: Config
    home: Path
    db: Database
    ledger: Ledger
    sessions: SessionStore
    keys: KeyStore
    toolset: Toolset
    auth_enabled: bool = True
    notices: list[str] = field(default_factory=list)
    vault: VaultStore | None = None
    credentials: Credentials | None = None
    upstreams: Upstreams | None = None

    @classmethod
    def open_stores(cls, config: Config, home: Path, *, auth_enabled: bool = True) -> Runtime:
        db = open_database(home)
        led = Ledger(db)
        rt = cls(config, home, db, led, SessionStore(db, led), KeyStore(db), Toolset(), auth_enabled)
        rt.ensure_admin_key()
        return rt

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: Config, home: Path, *, auth_enabled: bool = True) -> AsyncIterator[Runtime]:
        """Everything serving needs; raises vault errors (wrong master key...) before anything listens."""
        rt = cls.open_stores(config, home, auth_enabled=auth_enabled)
        try:
            async with contextlib.AsyncExitStack() as stack:
                events = VaultEvents()
                rt.vault = await VaultStore.open(db_path(home), settings=config.vault, home=home, on_event=events)
                stack.push_async_callback(rt.vault.close)
                rt.notices.extend(rt.vault.notices)
                rt.credentials = Credentials(rt.vault, rt.ledger)
                events.ledger = rt.ledger
                await stack.enter_async_context(add_builtin_tools(rt.toolset, config, rt.workspaces, rt.notices))
                for tool in await stack.enter_async_context(http_tools(config.http_tools)):
                    rt.toolset.add(tool, "http")
                rt.upstreams = Upstreams(config.upstreams, rt.toolset, rt.credentials)
                await stack.enter_async_context(rt.upstreams.running())
                yield rt
        finally:
            rt.db.close()

    def ensure_admin_key(self) -> None:
        """On a fresh home, create an admin key and write it to ``admin.key`` (0600)."""
        path = self.home / "admin.key"
        if path.exists():
            return
        key = self.keys.create_sync("admin", admin=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        self.notices.append(f"created an admin API key in {path} (mode 0600)")

    @property
    def workspaces(self) -> Path:
        """Where session workspaces live: ``$KEYHAND_HOME/workspaces/<session id>``."""
        return self.home / "workspaces"

    async def redactor_for(self, principal: Principal) -> Redactor:
        """Every secret in this principal's scope (own and shared credentials, provider secrets)."""
        if self.credentials is None:
            return NO_SECRETS
        return await self.credentials.redactor(principal)
