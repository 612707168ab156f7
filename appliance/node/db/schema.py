"""The node database's schema and its migrations: every table, index and upgrade in one place.

:func:`migrate` brings a database made by any earlier version up to :data:`SCHEMA`; it runs on
the writer connection when the store opens, before anything else touches the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

DB_FILE = "node.sqlite3"
# Most inserts land on random keys (item ids, hash chains), so every one dirties a page of its
# own and a commit writes whole pages to the WAL: 1 KiB pages write about a third of the bytes
# 4 KiB pages do (measured on the echo pipeline). Takes effect only when a database is created.
PAGE_SIZE = 1024
# Page cache while ``migrate`` rebuilds a table (the default 2 MiB thrashes on its random-key
# index: 300,000 results took 12 s with it).
MIGRATION_CACHE_KIB = 256 * 1024

# ``item_tags.item_row`` is ``items.rowid``: new items get increasing rowids, so a message's tag
# rows append to the table instead of landing on random pages as item-id keys did. (GraphQL
# cursors are rowids too: never VACUUM this database, which may renumber them.)
#
# The node's own signed items live in the row written with them, not in ``items``: an
# Assignment's raw bytes in its ``schedule`` row (``assignment``), a Result's in its ``results``
# or ``cron_results`` row (``raw``). A ``results`` row is first written as the slot's intent
# (``unsigned``, no ``result_id``, empty ``data``) and completed when the signed Result is
# stored. Rows written by earlier versions have these columns NULL: their items are ``items``
# rows (read as a fallback), and their intents were moved into ``results`` by :func:`migrate`.
_RESULTS_TABLE = """CREATE TABLE IF NOT EXISTS results (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, message_id TEXT NOT NULL,
    result_id TEXT UNIQUE, data BLOB NOT NULL, raw BLOB, unsigned BLOB,
    PRIMARY KEY (process_id, slot))"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, raw BLOB NOT NULL, owner TEXT NOT NULL, target TEXT,
    kind TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS item_tags (
    item_row INTEGER NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (item_row, position)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS item_tags_by_name_value ON item_tags (name, value);
CREATE INDEX IF NOT EXISTS items_by_owner ON items (owner);
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY, module_id TEXT NOT NULL, owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS schedule (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, message_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL, hash_chain TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
    block_height INTEGER NOT NULL, attestation_id TEXT NOT NULL, push_depth INTEGER NOT NULL,
    assignment BLOB, PRIMARY KEY (process_id, slot), UNIQUE (process_id, message_id));
{_RESULTS_TABLE};
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
CREATE TABLE IF NOT EXISTS cron_results (
    process_id TEXT NOT NULL, seq INTEGER NOT NULL, after_slot INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL, cron TEXT NOT NULL, rank INTEGER NOT NULL,
    block_height INTEGER NOT NULL, result_id TEXT NOT NULL UNIQUE, data BLOB NOT NULL,
    raw BLOB, PRIMARY KEY (process_id, seq));
CREATE INDEX IF NOT EXISTS cron_results_by_slot ON cron_results (process_id, after_slot);
"""
# Created once the columns they name exist (an earlier version's tables get them in migrate).
# Assignments stored in ``items`` (by earlier versions) are found there, so only the ones held in
# ``schedule`` are indexed by id; a Result's id is its row's UNIQUE ``result_id``.
INDEXES = """
CREATE INDEX IF NOT EXISTS schedule_by_assignment ON schedule (assignment_id)
    WHERE assignment IS NOT NULL;
DROP INDEX IF EXISTS results_by_message;
"""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the node's pragmas (WAL, full sync, foreign-key-free, busy timeout)."""
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                           timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Create missing tables and upgrade a database written by an earlier version."""
    conn.executescript(SCHEMA)
    _migrate_tags(conn)
    _migrate_checkpoint_crons(conn)
    _migrate_node_items(conn)
    conn.executescript(INDEXES)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def _migrate_node_items(conn: sqlite3.Connection) -> None:
    """Give ``schedule``, ``results`` and ``cron_results`` the columns holding the node's own
    items, and move recorded intents (``result_intents``) into ``results`` rows.

    ``results`` is rebuilt when it comes from an earlier version: its ``result_id`` was NOT NULL,
    which an intent row (no Result yet) cannot satisfy. Its rows keep their values; their Result
    items stay in ``items``.
    """
    if "assignment" not in _columns(conn, "schedule"):
        conn.execute("ALTER TABLE schedule ADD COLUMN assignment BLOB")
    if "raw" not in _columns(conn, "cron_results"):
        conn.execute("ALTER TABLE cron_results ADD COLUMN raw BLOB")
    old_results = "unsigned" not in _columns(conn, "results")
    old_intents = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'result_intents'").fetchone() is not None
    if not old_results and not old_intents:
        return
    cache = int(conn.execute("PRAGMA cache_size").fetchone()[0])
    conn.execute(f"PRAGMA cache_size = -{MIGRATION_CACHE_KIB}")  # the id index is random
    try:
        with _transaction(conn):
            _rebuild_results(conn, old_results, old_intents)
    finally:
        conn.execute(f"PRAGMA cache_size = {cache}")


def _rebuild_results(conn: sqlite3.Connection, old_results: bool, old_intents: bool) -> None:
    """Move ``results`` rows to the new table and recorded intents into it."""
    if old_results:
        conn.execute("ALTER TABLE results RENAME TO results_before")
        conn.execute("DROP INDEX IF EXISTS results_by_message")
        conn.execute(_RESULTS_TABLE)
        conn.execute("INSERT INTO results (process_id, slot, message_id, result_id, data) "
                     "SELECT process_id, slot, message_id, result_id, data "
                     "FROM results_before ORDER BY rowid")
        conn.execute("DROP TABLE results_before")
    if old_intents:
        conn.execute("INSERT OR IGNORE INTO results (process_id, slot, message_id, data, "
                     "unsigned) SELECT i.process_id, i.slot, s.message_id, x'', i.unsigned "
                     "FROM result_intents i JOIN schedule s ON s.process_id = i.process_id "
                     "AND s.slot = i.slot")
        conn.execute("DROP TABLE result_intents")


def _migrate_checkpoint_crons(conn: sqlite3.Connection) -> None:
    """Give ``checkpoints`` its ``crons`` column (cron results folded into the memory)."""
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(checkpoints)")}
    if "crons" not in columns:
        conn.execute("ALTER TABLE checkpoints ADD COLUMN crons INTEGER NOT NULL DEFAULT 0")


def _migrate_tags(conn: sqlite3.Connection) -> None:
    """Move a database made before ``item_tags`` (tags keyed by item id text) over to it."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tags'"
                    ).fetchone() is None:
        return
    with _transaction(conn):
        conn.execute("INSERT OR IGNORE INTO item_tags (item_row, position, name, value) "
                     "SELECT items.rowid, tags.position, tags.name, tags.value "
                     "FROM tags JOIN items ON items.id = tags.item_id")
        conn.execute("DROP TABLE tags")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed when the block ends, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (disk full)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
