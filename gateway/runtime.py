"""The running gateway's parts, opened and closed together.

One object owns the database, the ledger, the session and key stores and the
toolset, so the HTTP app, the stdio server and the CLI all build on the same
composition, written once here.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from gateway import auth, ledger, sessions
from gateway.auth import KeyStore, Principal
from gateway.config import Config
from gateway.db import Database
from gateway.ledger import Ledger
from gateway.redact import NO_SECRETS, Redactor
from gateway.sessions import SessionStore
from gateway.toolset import Toolset
from tools.session_events import session_events_tool

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

    @classmethod
    def open(cls, config: Config, home: Path, *, auth_enabled: bool = True) -> Runtime:
        db = open_database(home)
        led = Ledger(db)
        toolset = Toolset()
        toolset.add(session_events_tool(), "builtin")
        rt = cls(config, home, db, led, SessionStore(db, led), KeyStore(db), toolset, auth_enabled)
        rt.ensure_admin_key()
        return rt

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

    def workspace(self, session_id: str) -> Path:
        path = self.home / "workspaces" / session_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def redactor_for(self, principal: Principal) -> Redactor:
        """Every secret in this principal's scope (own and shared credentials)."""
        return NO_SECRETS

    async def aclose(self) -> None:
        self.db.close()


def new_secret() -> str:
    return secrets.token_urlsafe(32)
