"""The gateway's one SQLite file: a single serialised writer and a small pool of readers.

Why one writer: the ledger's sequence numbers and hash chain must never race,
and SQLite allows one writer at a time anyway. Like datasette's write thread,
every write is a function run on a dedicated thread, taken from a queue. Unlike
it, the thread drains the queue and runs everything it found in ONE transaction
(each job in its own savepoint, so one failing job does not undo the others):
with ``synchronous=NORMAL`` in WAL mode a commit is durable against a process
crash (``kill -9``), and group commit makes thousands of appends a second cheap.

A job's future resolves only after its transaction committed: an acknowledged
write is on disk.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()
_MAX_BATCH = 512


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas every connection of the gateway uses."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.AbstractEventLoop | None", Any]
"""(function, the loop of an async waiter or None, its future)."""


def _resolve_all(items: list[tuple[Any, bool, Any]]) -> None:
    for fut, ok, value in items:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class Database:
    """A SQLite file with one writer thread and a reader connection per worker thread."""

    def __init__(self, path: Path, schema: list[str] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # the ledger and the vault live here: owner-only (SQLite gives -wal/-shm the same)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._writer = connect(path)
        for script in schema or []:
            self._writer.executescript(script)  # idempotent CREATE ... IF NOT EXISTS
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._local = threading.local()
        self._thread = threading.Thread(target=self._write_loop, name="keyhand-db-writer", daemon=True)
        self._thread.start()
        self._closed = False

    # -- writing ---------------------------------------------------------------

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread inside a transaction; block until committed."""
        fut: Future[T] = Future()
        self._jobs.put((fn, None, fut))
        return fut.result()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread inside a transaction; resolve after commit."""
        if self._closed:
            raise RuntimeError("database is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, fut))
        return await fut

    def _write_loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._settle(self._run_batch(batch))
                    return
                batch.append(nxt)
            self._settle(self._run_batch(batch))

    def _run_batch(self, batch: list[Job]) -> list[tuple[Job, bool, Any]]:
        """Run every job in one transaction, each in its own savepoint; return the outcomes after COMMIT."""
        conn = self._writer
        results: list[tuple[Job, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = job[0](conn)
                except BaseException as exc:  # a job's failure belongs to its caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((job, False, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((job, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(job, False, exc) for job in batch]
        return results

    @staticmethod
    def _settle(outcomes: list[tuple[Job, bool, Any]]) -> None:
        """Resolve the waiters: one wake-up per event loop for the whole batch, not one per job."""
        per_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, bool, Any]]] = {}
        for (_fn, loop, fut), ok, value in outcomes:
            if loop is None:
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            else:
                per_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, items in per_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, items)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    # -- reading ---------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._reader())

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with a reader connection on a worker thread (WAL: readers never block the writer)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.read_sync, fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        self._thread.join(timeout=10)
        self._writer.close()
