"""The forward queue: client items this node took for a process another node hosts.

An item is stored here (durably, before any attempt) with the peer URL it goes to; the row keeps
the peer's receipt once it acknowledged the item, or why it refused it. It lives in a database
file of its own (:data:`FORWARDS_FILE`) because it belongs to the node's front, not to a shard.
Schema versions are ``PRAGMA user_version``; :func:`migrate` brings an older file up to date.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import NotFound, Overloaded
from appliance.node.db.schema import connect
from appliance.node.db.store import storage_error

FORWARDS_FILE = "forwards.sqlite3"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_MIGRATIONS = (
    """CREATE TABLE IF NOT EXISTS forwards (
        item_id TEXT PRIMARY KEY, peer_url TEXT NOT NULL, raw BLOB NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL, next_ms INTEGER NOT NULL,
        receipt TEXT, error TEXT, created_ms INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS forwards_due ON forwards (status, next_ms);""",
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class Forward:
    """One queued item and how its forwarding stands."""

    item_id: str
    peer_url: str
    raw: bytes
    status: str
    attempts: int
    next_ms: int
    receipt: str | None
    """The peer's receipt (JSON text) once delivered."""
    error: str | None
    """The last failure (the peer's refusal once ``failed``)."""
    queued_ms: int


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations after the file's ``user_version``, each in one transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version = {number}; COMMIT;")


class ForwardQueue:
    """The queue on one SQLite file; thread-safe (one connection, a lock: forwards are few)."""

    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._conn = connect(data_dir / FORWARDS_FILE)
        migrate(self._conn)

    def _write(self, sql: str, *params: object) -> None:
        with self._lock:
            try:
                self._conn.execute(sql, params)
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc) from None

    def add(self, item_id: str, peer_url: str, raw: bytes, now_ms: int, *,
            max_pending: int, max_pending_bytes: int) -> Forward:
        """Queue ``raw`` for ``peer_url`` (durable on return); an item queued before keeps its
        row (the same item posted again is the same forward). Overloaded, nothing stored, when
        the pending items would exceed ``max_pending`` or ``max_pending_bytes``."""
        with self._lock:
            try:
                known = self._conn.execute("SELECT 1 FROM forwards WHERE item_id = ?",
                                           (item_id,)).fetchone()
                if known is None:
                    count, size = self._conn.execute(
                        "SELECT COUNT(*), COALESCE(SUM(length(raw)), 0) FROM forwards "
                        "WHERE status = ?", (PENDING,)).fetchone()
                    if count >= max_pending or size + len(raw) > max_pending_bytes:
                        raise Overloaded(f"{count} items ({size} bytes) already wait for peers "
                                         "that do not answer; retry later", 5.0)
                    self._conn.execute(
                        "INSERT OR IGNORE INTO forwards (item_id, peer_url, raw, status, "
                        "attempts, next_ms, created_ms) VALUES (?, ?, ?, ?, 0, ?, ?)",
                        (item_id, peer_url, raw, PENDING, now_ms, now_ms))
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc) from None
        return self.get(item_id)

    def get(self, item_id: str) -> Forward:
        """The row of ``item_id`` (NotFound when it was never queued)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT item_id, peer_url, raw, status, attempts, next_ms, receipt, error, "
                "created_ms FROM forwards WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            raise NotFound(f"item {item_id} was not forwarded by this node")
        return Forward(*row)

    def delivered(self, item_id: str, receipt: str) -> None:
        """The peer acknowledged the item with ``receipt`` (JSON text); its bytes are dropped
        (the row stays: the same item posted again answers this receipt)."""
        self._write("UPDATE forwards SET status = ?, receipt = ?, error = NULL, raw = x'', "
                    "attempts = attempts + 1 WHERE item_id = ?", DELIVERED, receipt, item_id)

    def failed(self, item_id: str, error: str) -> None:
        """The peer refused the item for good (its bytes are dropped)."""
        self._write("UPDATE forwards SET status = ?, error = ?, raw = x'', "
                    "attempts = attempts + 1 WHERE item_id = ?", FAILED, error, item_id)

    def retry_at(self, item_id: str, error: str, next_ms: int) -> None:
        """The attempt failed for now; try again at ``next_ms``."""
        self._write("UPDATE forwards SET error = ?, attempts = attempts + 1, next_ms = ? "
                    "WHERE item_id = ? AND status = ?", error, next_ms, item_id, PENDING)

    def due(self, now_ms: int, limit: int) -> list[Forward]:
        """Pending forwards whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT item_id, peer_url, raw, status, attempts, next_ms, receipt, error, "
                "created_ms FROM forwards WHERE status = ? AND next_ms <= ? "
                "ORDER BY next_ms, created_ms LIMIT ?", (PENDING, now_ms, limit)).fetchall()
        return [Forward(*row) for row in rows]

    def prune(self, before_ms: int, limit: int) -> int:
        """Delete up to ``limit`` settled (delivered or failed) rows queued before
        ``before_ms``; how many went. The same item posted again later is forwarded again, and
        the peer, which schedules a message once, answers the slot it already has."""
        with self._lock:
            try:
                cursor = self._conn.execute(
                    "DELETE FROM forwards WHERE rowid IN (SELECT rowid FROM forwards "
                    "WHERE status != ? AND created_ms < ? LIMIT ?)", (PENDING, before_ms, limit))
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc) from None
        return int(cursor.rowcount)

    def by_status(self) -> dict[str, int]:
        """Row counts keyed by status."""
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM forwards GROUP BY status"
                                      ).fetchall()
        return {str(status): int(count) for status, count in rows}

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()


__all__ = ["DELIVERED", "FAILED", "FORWARDS_FILE", "PENDING", "SCHEMA_VERSION", "Forward",
           "ForwardQueue", "migrate"]
