"""The ledger: each session's append-only, hash-chained event log.

An event is ``(session_id, seq, type, ts, data, hash)``. ``seq`` counts 1, 2, 3...
per session without gaps; ``type`` is ``domain.action``; ``hash`` is
``sha256(prev_hash || canonical(event))``, so changing, removing or reordering
any event breaks the chain from that event on (:meth:`Ledger.verify` names it).
Events are never updated or deleted; only retention purges whole sessions.

Appends go through the database's single writer (see ``gateway/db.py``), which
assigns ``seq`` and the chain; an append returns after its transaction committed.
Readers wait for new events with :meth:`Ledger.wait_after`, then read them back
from the database: a stream built that way misses nothing and repeats nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.db import Database
from gateway.errors import BadRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    data       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
"""

GENESIS = "0" * 64
MAX_SLICE = 1000
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$")


@dataclass(frozen=True, slots=True)
class Event:
    session_id: str
    seq: int
    type: str
    ts: str
    data: dict[str, Any]
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "ts": self.ts, "data": self.data, "hash": self.hash}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev: str, session_id: str, seq: int, type_: str, ts: str, data_json: str) -> str:
    body = canonical({"session": session_id, "seq": seq, "type": type_, "ts": ts, "data": data_json})
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


def now_ts() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def append_in(conn: sqlite3.Connection, session_id: str, type_: str, data: dict[str, Any]) -> Event:
    """Append one event inside the writer's transaction (``conn`` is the writer connection)."""
    if not EVENT_TYPE.match(type_):
        raise BadRequest(f"event type {type_!r} is not of the form domain.action (lowercase)")
    row = conn.execute(
        "SELECT seq, hash FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1", (session_id,)
    ).fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    ts = now_ts()
    data_json = canonical(data)
    digest = chain_hash(prev, session_id, seq, type_, ts, data_json)
    conn.execute(
        "INSERT INTO events (session_id, seq, type, ts, data, hash) VALUES (?, ?, ?, ?, ?, ?)",
        (session_id, seq, type_, ts, data_json, digest),
    )
    return Event(session_id, seq, type_, ts, data, digest)


def _row_to_event(session_id: str, row: tuple[Any, ...]) -> Event:
    return Event(session_id, row[0], row[1], row[2], json.loads(row[3]), row[4])


def _types_clause(types: Sequence[str]) -> tuple[str, list[str]]:
    parts: list[str] = []
    params: list[str] = []
    for t in types:
        if not TYPE_PATTERN.match(t):
            raise BadRequest(f"type filter {t!r} must be a type like 'tool.call' or a prefix like 'tool.*'")
        if t.endswith(".*"):
            parts.append("type LIKE ? ESCAPE '\\'")
            params.append(t[:-1].replace("_", "\\_") + "%")
        else:
            parts.append("type = ?")
            params.append(t)
    return "(" + " OR ".join(parts) + ")", params


@dataclass(frozen=True, slots=True)
class Slice:
    """A positional slice of one session's events."""

    after: int | None = None
    before: int | None = None
    limit: int = 100
    types: Sequence[str] = ()
    order: str = "asc"

    def validated(self) -> Slice:
        if self.order not in ("asc", "desc"):
            raise BadRequest("order must be 'asc' or 'desc'")
        if not 1 <= self.limit <= MAX_SLICE:
            raise BadRequest(f"limit must be between 1 and {MAX_SLICE}")
        for name, v in (("after", self.after), ("before", self.before)):
            if v is not None and v < 0:
                raise BadRequest(f"{name} must be a non-negative sequence number")
        return self


class Ledger:
    """Append, read, wait for and verify session events."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiters: dict[str, asyncio.Event] = {}

    async def append(self, session_id: str, type_: str, data: dict[str, Any]) -> Event:
        event = await self.db.write(lambda conn: append_in(conn, session_id, type_, data))
        self.published(session_id)
        return event

    def published(self, session_id: str) -> None:
        """Wake everyone waiting on this session (call after a committed append)."""
        waiter = self._waiters.pop(session_id, None)
        if waiter is not None:
            waiter.set()

    async def wait_after(self, session_id: str, seq: int, timeout: float) -> bool:
        """Wait until the session has an event after ``seq`` (or ``timeout``); True if it has."""
        while True:
            waiter = self._waiters.setdefault(session_id, asyncio.Event())
            if await self.last_seq(session_id) > seq:
                return True
            try:
                await asyncio.wait_for(waiter.wait(), timeout)
            except TimeoutError:
                return False

    async def last_seq(self, session_id: str) -> int:
        def q(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT MAX(seq) FROM events WHERE session_id = ?", (session_id,)).fetchone()
            return int(row[0] or 0)

        return await self.db.read(q)

    async def read(self, session_id: str, window: Slice) -> list[Event]:
        window = window.validated()
        return await self.db.read(lambda conn: self.read_sync(conn, session_id, window))

    @staticmethod
    def read_sync(conn: sqlite3.Connection, session_id: str, window: Slice) -> list[Event]:
        where = ["session_id = ?"]
        params: list[Any] = [session_id]
        if window.after is not None:
            where.append("seq > ?")
            params.append(window.after)
        if window.before is not None:
            where.append("seq < ?")
            params.append(window.before)
        if window.types:
            clause, tparams = _types_clause(window.types)
            where.append(clause)
            params.extend(tparams)
        order = "ASC" if window.order == "asc" else "DESC"
        sql = f"SELECT seq, type, ts, data, hash FROM events WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?"
        rows = conn.execute(sql, (*params, window.limit)).fetchall()
        return [_row_to_event(session_id, r) for r in rows]

    @staticmethod
    def verify_sync(conn: sqlite3.Connection, session_id: str) -> tuple[int, int | None, str]:
        """Check the chain: ``(events checked, first bad seq or None, reason)``."""
        prev, expected, count = GENESIS, 1, 0
        cur = conn.execute(
            "SELECT seq, type, ts, data, hash FROM events WHERE session_id = ? ORDER BY seq", (session_id,)
        )
        for seq, type_, ts, data_json, digest in cur:
            count += 1
            if seq != expected:
                return count, seq, f"sequence gap: expected {expected}, found {seq}"
            if chain_hash(prev, session_id, seq, type_, ts, data_json) != digest:
                return count, seq, "hash does not match the event's content and its predecessor"
            prev, expected = digest, seq + 1
        return count, None, "ok"
