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
        self._jobs.put((fn, fut))
        return fut.result()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread inside a transaction; resolve after commit."""
        if self._closed:
            raise RuntimeError("database is closed")
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return await asyncio.wrap_future(fut)

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
                    self._run_batch(batch)
                    return
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]) -> None:
        conn = self._writer
        results: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = fn(conn)
                except BaseException as exc:  # a job's failure belongs to its caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((fut, False, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((fut, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _fn, fut in batch:
                fut.set_exception(exc)
            return
        for fut, ok, value in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

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
