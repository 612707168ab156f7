"""Embedded durable store: SQLite in WAL mode, one writer thread with group commit.

Every write is a function run inside a transaction by the writer thread; several pending
functions share one ``COMMIT`` (one fsync), each isolated by a savepoint so a function that
raises leaves nothing behind. A caller's future resolves only after the commit is durable, which
is what lets the node acknowledge a message only once it survives ``kill -9``.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from appliance.errors import StorageFull
from appliance.node.datadir import DIR_MODE, create_private_file
from appliance.node.db.schema import DB_FILE, connect, migrate

T = TypeVar("T")
SQLITE_FULL = 13
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
MAX_BATCH = 256
# Group-commit coalescing: once the queue is empty, wait at most this long (and at most
# LINGER_SHARE of the last commit's duration) for callers that were part of a recent commit and
# have not submitted again yet. Closed-loop callers come back a fraction of a millisecond after
# their ack; without the wait they miss the commit that starts right then and pay a full extra
# fsync. Nothing is acknowledged earlier because of this: it only delays the start of a commit.
MAX_LINGER_SECONDS = 0.001
LINGER_SHARE = 0.25
# WAL checkpoints run on their own thread and connection, not inside the writer's commits (where
# SQLite's automatic checkpoint would put their page copies and fsyncs on every caller's ack).
# Should the WAL still outgrow this many frames, the writer checkpoints it itself. Between two
# checkpoints the thread pauses: pages written again within the pause are copied back once
# (0.5 s instead of 50 ms cut the bytes written per message by a third on the echo pipeline).
WAL_FRAMES_LIMIT = 65536
CHECKPOINT_PAUSE_SECONDS = 0.5

# (write function, its caller's future, its caller: the submitting thread or on_behalf_of's)
_Op = tuple[Callable[[sqlite3.Connection], Any], Future[Any], Hashable]
_CALLER: ContextVar[Hashable | None] = ContextVar("store_caller", default=None)


@contextmanager
def on_behalf_of(caller: Hashable) -> Iterator[None]:
    """Count the writes this thread submits inside as ``caller``'s for the group-commit linger:
    for a thread serving a caller that comes back on another thread (a shard's channel calls
    run on any thread of a pool; ``caller`` names the front thread that made the call). None:
    the submitting thread, as outside."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)


def storage_error(exc: BaseException) -> BaseException:
    """``exc``, or :class:`StorageFull` when it says the disk is full (SQLITE_FULL, ENOSPC)."""
    full = (isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", 0) & 0xFF
            == SQLITE_FULL) or (isinstance(exc, OSError) and exc.errno in _NO_SPACE)
    if not full:
        return exc
    error = StorageFull(f"the node's disk is full ({exc}); nothing was stored. Reads still "
                        "work; writes resume by themselves once there is space")
    error.__cause__ = exc
    return error


class Store:
    """The node's database: a writer thread for all writes, thread-local readers."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        self.path = data_dir / DB_FILE
        create_private_file(self.path)  # SQLite gives -wal and -shm the database file's mode
        self._writer_conn = connect(self.path)
        migrate(self._writer_conn)
        self._writer_conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._local = threading.local()
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._closed = False
        self._committed = threading.Event()
        self._wal_too_big = False
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="store-checkpointer", daemon=True)
        self._thread.start()
        self._checkpointer.start()

    # --- writes ------------------------------------------------------------------------------

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run ``fn`` in a write transaction; the future resolves after a durable commit."""
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(RuntimeError("store is closed"))
            return future
        caller = _CALLER.get()
        self._queue.put((fn, future, threading.get_ident() if caller is None else caller))
        return future

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking :meth:`submit`."""
        return self.submit(fn).result()

    def _write_loop(self) -> None:
        conn = self._writer_conn
        recent: list[set[Hashable]] = [set(), set()]  # callers of the last two commits
        last_commit = 0.0
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            callers = {first[2]}
            expected = recent[0] | recent[1]
            deadline: float | None = None
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    if expected <= callers:
                        break
                    now = time.perf_counter()
                    if deadline is None:
                        deadline = now + min(MAX_LINGER_SECONDS, LINGER_SHARE * last_commit)
                    if now >= deadline:
                        break
                    try:
                        nxt = self._queue.get(timeout=deadline - now)
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                callers.add(nxt[2])
            started = time.perf_counter()
            self._run_batch(conn, batch)
            last_commit = time.perf_counter() - started
            recent = [recent[1], callers]
            if self._wal_too_big:
                self._wal_too_big = False
                self._checkpoint(conn)
            self._committed.set()
            if stop:
                self._queue.put(None)

    def _checkpoint_loop(self) -> None:
        conn = connect(self.path)
        try:
            while not self._closed:
                self._committed.wait()
                self._committed.clear()
                if self._closed:
                    return
                frames = self._checkpoint(conn)
                if frames > WAL_FRAMES_LIMIT:
                    self._wal_too_big = True
                time.sleep(CHECKPOINT_PAUSE_SECONDS)
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> int:
        """A passive checkpoint; returns how many frames the WAL still holds unchecked."""
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return 0
        if row is None or int(row[1]) < 0:
            return 0
        return int(row[1]) - int(row[2])

    @staticmethod
    def _run_batch(conn: sqlite3.Connection, batch: list[_Op]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future, _caller in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn)
                except Exception as exc:
                    if not conn.in_transaction:  # SQLite rolled it all back (disk full): fail all
                        raise
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, False, exc))
                    continue
                conn.execute("RELEASE op")
                outcomes.append((future, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for _fn, future, _caller in batch:
                future.set_exception(storage_error(exc))
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(storage_error(value))

    def close(self) -> None:
        """Drain pending writes and stop the writer."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
            self._committed.set()
            self._checkpointer.join()
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
