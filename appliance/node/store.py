"""Embedded durable store: SQLite in WAL mode, one writer thread with group commit.

Every write is a function run inside a transaction by the writer thread; several pending
functions share one ``COMMIT`` (one fsync), each isolated by a savepoint so a function that
raises leaves nothing behind. A caller's future resolves only after the commit is durable, which
is what lets the node acknowledge a message only once it survives ``kill -9``.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
DB_FILE = "node.sqlite3"
MAX_BATCH = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, raw BLOB NOT NULL, owner TEXT NOT NULL, target TEXT,
    kind TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    item_id TEXT NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (item_id, position));
CREATE INDEX IF NOT EXISTS tags_by_name_value ON tags (name, value);
CREATE INDEX IF NOT EXISTS items_by_owner ON items (owner);
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY, module_id TEXT NOT NULL, owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS schedule (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, message_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL, hash_chain TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
    block_height INTEGER NOT NULL, attestation_id TEXT NOT NULL, push_depth INTEGER NOT NULL,
    PRIMARY KEY (process_id, slot), UNIQUE (process_id, message_id));
CREATE TABLE IF NOT EXISTS result_intents (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, unsigned BLOB NOT NULL,
    PRIMARY KEY (process_id, slot));
CREATE TABLE IF NOT EXISTS results (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, message_id TEXT NOT NULL,
    result_id TEXT NOT NULL UNIQUE, data BLOB NOT NULL,
    PRIMARY KEY (process_id, slot));
CREATE INDEX IF NOT EXISTS results_by_message ON results (process_id, message_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,
    raw_size INTEGER NOT NULL, clock INTEGER NOT NULL, item_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL, PRIMARY KEY (process_id, slot));
CREATE TABLE IF NOT EXISTS outbox (
    item_id TEXT PRIMARY KEY, from_process TEXT NOT NULL, from_slot INTEGER NOT NULL,
    target TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL, detail TEXT,
    push_depth INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_by_status ON outbox (status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the node's pragmas (WAL, full sync, foreign-key-free, busy timeout)."""
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                           timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


class Store:
    """The node's database: a writer thread for all writes, thread-local readers."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_FILE
        self._writer_conn = connect(self.path)
        self._writer_conn.executescript(SCHEMA)
        self._local = threading.local()
        self._queue: queue.Queue[tuple[Callable[[sqlite3.Connection], Any], Future[Any]] | None]
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._closed = False
        self._thread.start()

    # --- writes ------------------------------------------------------------------------------

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run ``fn`` in a write transaction; the future resolves after a durable commit."""
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(RuntimeError("store is closed"))
            return future
        self._queue.put((fn, future))
        return future

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking :meth:`submit`."""
        return self.submit(fn).result()

    def _write_loop(self) -> None:
        conn = self._writer_conn
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)

    @staticmethod
    def _run_batch(conn: sqlite3.Connection,
                   batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the caller's future
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, False, exc))
                    continue
                conn.execute("RELEASE op")
                outcomes.append((future, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _fn, future in batch:
                future.set_exception(exc)
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def close(self) -> None:
        """Drain pending writes and stop the writer."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            self._writer_conn.close()

    # --- reads -------------------------------------------------------------------------------

    @property
    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    @contextmanager
    def snapshot_read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read transaction over several queries."""
        conn = self.reader
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def one(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        """First row of a read query."""
        row: tuple[Any, ...] | None = self.reader.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """All rows of a read query."""
        return list(self.reader.execute(sql, params).fetchall())

    def meta(self, key: str) -> str | None:
        """A value from the meta table."""
        row = self.one("SELECT value FROM meta WHERE key = ?", key)
        return None if row is None else str(row[0])
