"""Where the node's own signed items live: an Assignment in its schedule row, a Result in its
results row (written first as the slot's intent), and databases written when they were ``items``
rows with tag rows and the intents had a table of their own."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from appliance.ao import items
from appliance.node.db.schema import DB_FILE
from appliance.node.node import Node
from appliance.node.results import UnsignedResult
from appliance.proof.check import TrustInputs, check_proof
from appliance.proof.export import build_proof
from attestation.policy import Policy
from tests.node.test_node_core import _eval, _hosting_one, _node

# The tables as the version before this layout created them (its ``migrate`` then added
# ``checkpoints.crons``).
OLD_SCHEMA = """
CREATE TABLE items (
    id TEXT PRIMARY KEY, raw BLOB NOT NULL, owner TEXT NOT NULL, target TEXT,
    kind TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE item_tags (
    item_row INTEGER NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (item_row, position)) WITHOUT ROWID;
CREATE INDEX item_tags_by_name_value ON item_tags (name, value);
CREATE INDEX items_by_owner ON items (owner);
CREATE TABLE processes (
    id TEXT PRIMARY KEY, module_id TEXT NOT NULL, owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL);
CREATE TABLE schedule (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, message_id TEXT NOT NULL,
    assignment_id TEXT NOT NULL, hash_chain TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
    block_height INTEGER NOT NULL, attestation_id TEXT NOT NULL, push_depth INTEGER NOT NULL,
    PRIMARY KEY (process_id, slot), UNIQUE (process_id, message_id));
CREATE TABLE result_intents (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, unsigned BLOB NOT NULL,
    PRIMARY KEY (process_id, slot));
CREATE TABLE results (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, message_id TEXT NOT NULL,
    result_id TEXT NOT NULL UNIQUE, data BLOB NOT NULL,
    PRIMARY KEY (process_id, slot));
CREATE INDEX results_by_message ON results (process_id, message_id);
CREATE TABLE checkpoints (
    process_id TEXT NOT NULL, slot INTEGER NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,
    raw_size INTEGER NOT NULL, clock INTEGER NOT NULL, item_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL, PRIMARY KEY (process_id, slot));
ALTER TABLE checkpoints ADD COLUMN crons INTEGER NOT NULL DEFAULT 0;
CREATE TABLE outbox (
    item_id TEXT PRIMARY KEY, from_process TEXT NOT NULL, from_slot INTEGER NOT NULL,
    target TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL, detail TEXT,
    push_depth INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE INDEX outbox_by_status ON outbox (status);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cron_results (
    process_id TEXT NOT NULL, seq INTEGER NOT NULL, after_slot INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL, cron TEXT NOT NULL, rank INTEGER NOT NULL,
    block_height INTEGER NOT NULL, result_id TEXT NOT NULL UNIQUE, data BLOB NOT NULL,
    PRIMARY KEY (process_id, seq));
CREATE INDEX cron_results_by_slot ON cron_results (process_id, after_slot);
"""
_COPIED = {"item_tags": "item_row, position, name, value",
           "processes": "id, module_id, owner, created_ms",
           "checkpoints": "process_id, slot, file, sha256, raw_size, clock, item_id, created_ms, "
                          "crons",
           "outbox": "item_id, from_process, from_slot, target, kind, status, detail, "
                     "push_depth, created_ms",
           "meta": "key, value",
           "schedule": "process_id, slot, message_id, assignment_id, hash_chain, timestamp_ms, "
                       "block_height, attestation_id, push_depth",
           "cron_results": "process_id, seq, after_slot, timestamp_ms, cron, rank, "
                           "block_height, result_id, data"}


def _trust() -> TrustInputs:
    return TrustInputs(policy=Policy(any_measurement=True), now=datetime.now(UTC),
                       allow_emulated=True)


def _store_old_item(conn: sqlite3.Connection, raw: bytes, kind: str, created_ms: int) -> None:
    """As the earlier version stored a node item: an ``items`` row, its Type and Process tags."""
    item = items.parse_unverified(raw)
    cur = conn.execute("INSERT INTO items (id, raw, owner, target, kind, created_ms) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (item.id, raw, item.owner_address, item.target or None, kind, created_ms))
    conn.executemany("INSERT INTO item_tags VALUES (?, ?, ?, ?)",
                     [(cur.lastrowid, i, n, v) for i, (n, v) in enumerate(item.tags)
                      if n in ("Type", "Process")])


def _rewrite_in_old_layout(db: Path, pending_slot: int) -> None:
    """Rewrite ``db`` as the earlier version would have written the same history, with the
    Result of ``pending_slot`` left as a recorded intent (killed before it was stored)."""
    old = db.with_name("old.sqlite3")
    conn = sqlite3.connect(old, isolation_level=None)
    conn.executescript(OLD_SCHEMA)
    conn.execute("ATTACH DATABASE ? AS new", (str(db),))
    conn.execute("BEGIN")
    conn.execute("INSERT INTO items (rowid, id, raw, owner, target, kind, created_ms) "
                 "SELECT rowid, id, raw, owner, target, kind, created_ms FROM new.items")
    for table, columns in _COPIED.items():
        conn.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM new.{table}")
    for ts, raw in conn.execute("SELECT timestamp_ms, assignment FROM new.schedule "
                                "ORDER BY rowid").fetchall():
        _store_old_item(conn, raw, "assignment", ts)
    for ts, raw in conn.execute("SELECT timestamp_ms, raw FROM new.cron_results "
                                "ORDER BY rowid").fetchall():
        _store_old_item(conn, raw, "result", ts)
    for pid, slot, mid, rid, data, raw in conn.execute(
            "SELECT process_id, slot, message_id, result_id, data, raw FROM new.results "
            "ORDER BY rowid").fetchall():
        if slot == pending_slot:
            signed = items.parse_unverified(raw)
            intent = UnsignedResult(pid, slot, tuple(signed.tags), signed.data)
            conn.execute("INSERT INTO result_intents VALUES (?, ?, ?)",
                         (pid, slot, intent.encode()))
            continue
        _store_old_item(conn, raw, "result", 0)
        conn.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?)", (pid, slot, mid, rid, data))
    conn.execute("COMMIT")
    conn.execute("DETACH DATABASE new")
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    old.rename(db)


def _history(node: Node, process_id: str, messages: list[str]) -> dict[str, bytes]:
    """Every Assignment and Result of ``messages`` as the node answers them, by item id."""
    found = {}
    for mid in messages:
        _, assignment = node.scheduled(process_id, mid)
        result = node.result_item(process_id, mid)
        found[assignment.id] = assignment.raw
        found[items.parse_unverified(result).id] = result
    return found


def test_a_database_in_the_items_layout_answers_every_read_after_migration(
        tmp_path: Path) -> None:
    client, data, node, proc = _hosting_one(tmp_path)
    try:
        sent = [proc.id]
        for n, code in enumerate(["x = 41", "x = x + 1", "return x"]):
            msg = _eval(client, proc.id, code, n)
            node.ingest(msg.raw)
            sent.append(msg.id)
        node.result(proc.id, sent[-1])
        before = _history(node, proc.id, sent)
        schedule = node.schedule_items(proc.id, 0, 3)
    finally:
        node.close()
    _rewrite_in_old_layout(data / DB_FILE, pending_slot=3)
    conn = sqlite3.connect(data / DB_FILE)
    assert conn.execute("SELECT count(*) FROM items WHERE kind = 'assignment'").fetchone() == (4,)
    conn.close()

    node = _node(data)
    try:
        assert node.result(proc.id, sent[-1])["Output"]["data"] == "42"
        assert _history(node, proc.id, sent) == before, "same items, same ids, re-signed alike"
        assert node.schedule_items(proc.id, 0, 3) == schedule
        for item_id, raw in before.items():
            assert node.item_raw(item_id) == raw
            [(_, found)] = node.find_items(ids=[item_id], limit=2)
            assert found == raw
        old_assignments = node.find_items(tags=[("Type", ["Assignment"], False)], limit=10)
        assert len(old_assignments) == 4, "tag rows written before are still searched"
        assert check_proof(build_proof(node, proc.id, sent[-1]), _trust()).ok

        more = _eval(client, proc.id, "return x + 1", 3)
        node.ingest(more.raw)
        assert node.result(proc.id, more.id)["Output"]["data"] == "43"
        assert check_proof(build_proof(node, proc.id, more.id), _trust()).ok, \
            "the chains run on from the old rows to the new"
        store = node.home.store
        assert store.one("SELECT count(*) FROM items WHERE kind IN ('assignment', 'result')"
                         ) == (7,), "the new slot's items are not items rows"
        assert store.one("SELECT name FROM sqlite_master WHERE name IN "
                         "('result_intents', 'results_before', 'results_by_message')") is None
        assert store.one("SELECT count(*) FROM results WHERE result_id IS NULL") == (0,)
    finally:
        node.close()


def test_a_message_writes_no_items_row_for_its_assignment_or_result(tmp_path: Path) -> None:
    client, _data, node, proc = _hosting_one(tmp_path)
    try:
        store = node.home.store
        before = store.one("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM item_tags)")
        msg = _eval(client, proc.id, "return 1", 1)
        node.ingest(msg.raw)
        node.result(proc.id, msg.id)
        after = store.one("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM item_tags)")
        assert before is not None and after is not None
        assert after[0] - before[0] == 1, "only the message"
        assert after[1] - before[1] == len(msg.tags)
        plan = store.all("EXPLAIN QUERY PLAN SELECT s.rowid FROM schedule s WHERE "
                         "s.assignment_id = 'x' AND s.assignment IS NOT NULL")
        assert any("schedule_by_assignment" in str(row) for row in plan)
    finally:
        node.close()
