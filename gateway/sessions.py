"""Sessions: the durable unit of work, outliving MCP connections and gateway restarts.

A session has an id, an owner (principal name), an agent profile and a status.
Its history is its ledger; its files are its workspace directory. A session
another principal owns answers exactly like a session that does not exist
(:class:`NotFound`), so ids cannot be probed.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.auth import Principal
from gateway.db import Database
from gateway.errors import NotFound
from gateway.ledger import Ledger, append_in, now_ts

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    profile     TEXT NOT NULL,
    status      TEXT NOT NULL,
    client      TEXT,
    default_key TEXT UNIQUE,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_principal ON sessions (principal, created_at);
"""

_COLUMNS = "id, principal, profile, status, client, created_at"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    principal: str
    profile: str
    status: str
    client: str | None
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "principal": self.principal,
            "profile": self.profile,
            "status": self.status,
            "client": self.client,
            "created_at": self.created_at,
        }


def _row(r: tuple[Any, ...]) -> Session:
    return Session(r[0], r[1], r[2], r[3], r[4], r[5])


def new_session_id() -> str:
    return "ses_" + secrets.token_hex(10)


class SessionStore:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    async def create(
        self, principal: Principal, *, client: str | None = None, default_key: str | None = None
    ) -> Session:
        """Create a session and its first event, ``session.created``, in one transaction."""
        session = Session(new_session_id(), principal.name, principal.profile, "active", client, now_ts())

        def insert(conn: sqlite3.Connection) -> Session:
            if default_key is not None:
                row = conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE default_key = ?", (default_key,)).fetchone()
                if row:
                    return _row(row)
            conn.execute(
                "INSERT INTO sessions (id, principal, profile, status, client, default_key, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.principal,
                    session.profile,
                    session.status,
                    client,
                    default_key,
                    session.created_at,
                ),
            )
            append_in(
                conn,
                session.id,
                "session.created",
                {"principal": principal.name, "profile": principal.profile, "client": client},
            )
            return session

        created = await self.db.write(insert)
        self.ledger.published(created.id)
        return created

    async def get(self, session_id: str, principal: Principal) -> Session:
        """The session if ``principal`` may see it, else :class:`NotFound`."""
        row = await self.db.read(
            lambda c: c.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        )
        if row is None or not (principal.admin or row[1] == principal.name):
            raise NotFound(f"no session {session_id!r}")
        return _row(row)

    async def default_for(self, principal: Principal, client: str) -> Session:
        """The session used when a stateless client names none: one per (principal, client), stable."""
        key = f"{principal.name}\x00{client}"
        row = await self.db.read(
            lambda c: c.execute(f"SELECT {_COLUMNS} FROM sessions WHERE default_key = ?", (key,)).fetchone()
        )
        if row is not None:
            return _row(row)
        return await self.create(principal, client=client, default_key=key)

    async def list(self, principal: Principal, *, limit: int = 100) -> list[Session]:
        if principal.admin:
            sql, params = f"SELECT {_COLUMNS} FROM sessions ORDER BY created_at DESC LIMIT ?", (limit,)
        else:
            sql = f"SELECT {_COLUMNS} FROM sessions WHERE principal = ? ORDER BY created_at DESC LIMIT ?"
            params = (principal.name, limit)  # type: ignore[assignment]  # two tuple shapes, one query call
        rows = await self.db.read(lambda c: c.execute(sql, params).fetchall())
        return [_row(r) for r in rows]
