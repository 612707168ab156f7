"""Every query the node runs, as typed functions over a connection (SQL lives only in this
package).

Write functions run inside the store's writer transaction (``Store.submit``); read functions run
on any connection, usually the calling thread's ``Store.reader``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.node.db.kinds import ItemKind, OutboxStatus
from appliance.node.guest import ScheduledSlot

# The node's own Assignments and Results are stored in their schedule and results rows, not in
# ``items``, and have no tag rows: GraphQL finds them by ``ids`` only, and then matches these
# tags of theirs (as the tag rows earlier versions wrote for them did). Their other tags hold ids
# and hashes (Message, Hash-Chain, Previous-Result, ...). The SU and CU routes find them by
# message and slot.
NODE_ITEM_TAGS = frozenset({"Type", "Process"})
# GraphQL cursors of node items found by id: above every ``items`` rowid, by table and row.
NODE_CURSOR_BASE = 1 << 40
# (cursor offset, raw) of a node item by id, held in its schedule, results or cron_results row.
_NODE_ITEM = (
    "SELECT s.rowid * 4, s.assignment FROM schedule s "
    "WHERE s.assignment_id = ?1 AND s.assignment IS NOT NULL "
    "UNION ALL SELECT r.rowid * 4 + 1, r.raw FROM results r WHERE r.result_id = ?1 "
    "AND r.raw IS NOT NULL "
    "UNION ALL SELECT c.rowid * 4 + 2, c.raw FROM cron_results c WHERE c.result_id = ?1 "
    "AND c.raw IS NOT NULL")
_SLOT_COLUMNS = ("s.process_id, s.slot, s.message_id, s.assignment_id, s.hash_chain, "
                 "s.timestamp_ms, s.block_height, s.attestation_id, s.push_depth")
# Assignments and Results written by earlier versions are ``items`` rows; a results row without
# a ``result_id`` is an intent, not a stored result.
_OLD_ASSIGNMENT = "LEFT JOIN items a ON s.assignment IS NULL AND a.id = s.assignment_id"
_OLD_RESULT = "LEFT JOIN items i ON r.raw IS NULL AND i.id = r.result_id"
_SIGNED = "r.result_id IS NOT NULL"


@dataclass(frozen=True)
class ResultRow:
    """One stored result: its slot, message, signed item id, JSON data and raw item."""

    process_id: str
    slot: int
    message_id: str
    result_id: str
    data: bytes
    raw: bytes


@dataclass(frozen=True)
class ProcessRow:
    """A hosted process with its progress counters (``cursor`` orders the listing)."""

    cursor: int
    id: str
    module_id: str
    owner: str
    created_ms: int
    scheduled: int
    evaluated: int
    checkpoint_slot: int | None


@dataclass(frozen=True)
class CheckpointRow:
    """A recorded process checkpoint: its slot, file, memory hash and size, clock, and how many
    cron results its memory holds."""

    slot: int
    file: Path
    sha256: str
    raw_size: int
    clock: int
    crons: int


@dataclass(frozen=True)
class CronRow:
    """A stored cron result as the cron pages read it."""

    timestamp_ms: int
    after_slot: int
    cron: str
    data: bytes


def now_ms() -> int:
    """Wall-clock milliseconds, as the ``created_ms`` columns record them."""
    return time.time_ns() // 1_000_000


def slot_row(row: Sequence[Any]) -> ScheduledSlot:
    """A ``schedule`` row (all columns, in table order) as a :class:`ScheduledSlot`: its
    columns are NOT NULL TEXT and INTEGER, which SQLite returns as ``str`` and ``int``."""
    return ScheduledSlot(*row)


# --- items -----------------------------------------------------------------------------------

def store_item(conn: sqlite3.Connection, item: items.Item, kind: ItemKind) -> bool:
    """Insert an item and index its searchable tags; ``False`` when it was already stored."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO items (id, raw, owner, target, kind, created_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (item.id, item.raw, item.owner_address, item.target or None, str(kind), now_ms()))
    if cur.rowcount == 0:
        return False
    row = cur.lastrowid
    conn.executemany(
        "INSERT INTO item_tags (item_row, position, name, value) VALUES (?, ?, ?, ?)",
        [(row, i, name, value) for i, (name, value) in enumerate(item.tags)])
    return True


def item_raw(conn: sqlite3.Connection, item_id: str) -> bytes | None:
    """The raw bytes of a stored item: an ``items`` row, or a node-signed Assignment or Result
    held in its schedule or results row."""
    row = conn.execute("SELECT raw FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is not None:
        return bytes(row[0])
    node_item = _node_item(conn, item_id)
    return None if node_item is None else node_item[1]


def _node_item(conn: sqlite3.Connection, item_id: str) -> tuple[int, bytes] | None:
    row = conn.execute(_NODE_ITEM + " LIMIT 1", (item_id,)).fetchone()
    return None if row is None else (NODE_CURSOR_BASE + int(row[0]), bytes(row[1]))


def load_item(conn: sqlite3.Connection, item_id: str) -> items.Item | None:
    """A stored item, parsed (its signature was verified when it was accepted)."""
    raw = item_raw(conn, item_id)
    return None if raw is None else items.parse_unverified(raw)


def item_stored(conn: sqlite3.Connection, item_id: str, kind: ItemKind | None = None) -> bool:
    """Whether ``items`` holds ``item_id`` (of ``kind``, when given): the node's own Assignments
    and Results written by this version are not there (:func:`item_raw` finds them)."""
    if kind is None:
        row = conn.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone()
    else:
        row = conn.execute("SELECT 1 FROM items WHERE id = ? AND kind = ?",
                           (item_id, str(kind))).fetchone()
    return row is not None


def item_created_ms(conn: sqlite3.Connection, item_id: str) -> int | None:
    """When the node stored an ``items`` row (ms since the epoch), None when there is none."""
    row = conn.execute("SELECT created_ms FROM items WHERE id = ?", (item_id,)).fetchone()
    return None if row is None else int(row[0])


def processes_tagged(conn: sqlite3.Connection, tag_name: str) -> set[str]:
    """Ids of stored Process items carrying a tag named ``tag_name``."""
    rows = conn.execute("SELECT i.id FROM items i JOIN item_tags t ON t.item_row = i.rowid "
                        "WHERE i.kind = ? AND t.name = ?", (str(ItemKind.PROCESS), tag_name))
    return {str(r[0]) for r in rows}


def find_items(conn: sqlite3.Connection, *, ids: list[str] | None, owners: list[str] | None,
               recipients: list[str] | None, tags: list[tuple[str, list[str], bool]] | None,
               after_row: int | None, ascending: bool, limit: int) -> list[tuple[int, bytes]]:
    """(row cursor, raw item) of stored items matching every given filter, ordered by cursor.

    The node's own Assignments and Results (not in ``items``) are found only when ``ids`` names
    them; their cursors are above every ``items`` row's.
    """
    found = _find_rows(conn, ids=ids, owners=owners, recipients=recipients, tags=tags,
                       after_row=after_row, ascending=ascending, limit=limit)
    if ids:
        found += [(row, raw) for row, raw in _node_items(conn, ids)
                  if _node_item_matches(row, raw, owners, recipients, tags, after_row, ascending)]
        found.sort(key=lambda r: r[0], reverse=not ascending)
    return found[:limit]


def _node_items(conn: sqlite3.Connection, ids: list[str]) -> list[tuple[int, bytes]]:
    """(cursor, raw) of the node items held in schedule and results rows among ``ids``."""
    found = []
    for item_id in dict.fromkeys(ids):
        if not item_stored(conn, item_id):
            row = _node_item(conn, item_id)
            if row is not None:
                found.append(row)
    return found


def _node_item_matches(row: int, raw: bytes, owners: list[str] | None,
                       recipients: list[str] | None,
                       tags: list[tuple[str, list[str], bool]] | None, after_row: int | None,
                       ascending: bool) -> bool:
    if after_row is not None and (row <= after_row if ascending else row >= after_row):
        return False
    item = items.parse_unverified(raw)
    if owners is not None and item.owner_address not in owners:
        return False
    if recipients is not None and (item.target or None) not in recipients:
        return False
    for name, values, negate in tags or []:
        hit = name in NODE_ITEM_TAGS and any(n == name and v in values for n, v in item.tags)
        if hit == negate:
            return False
    return True


def _find_rows(conn: sqlite3.Connection, *, ids: list[str] | None, owners: list[str] | None,
               recipients: list[str] | None, tags: list[tuple[str, list[str], bool]] | None,
               after_row: int | None, ascending: bool, limit: int) -> list[tuple[int, bytes]]:
    where: list[str] = []
    params: list[Any] = []
    for column, values in (("id", ids), ("owner", owners), ("target", recipients)):
        if values is not None:
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            params += values
    for name, values, negate in tags or []:
        marks = ",".join("?" * len(values))
        clause = f"EXISTS (SELECT 1 FROM item_tags t WHERE t.item_row = items.rowid AND t.name = ? AND t.value IN ({marks}))"  # noqa: E501, S608 - placeholders only
        where.append(f"NOT {clause}" if negate else clause)
        params += [name, *values]
    if after_row is not None:
        where.append("rowid > ?" if ascending else "rowid < ?")
        params.append(after_row)
    sql = ("SELECT rowid, raw FROM items"  # noqa: S608 - clauses hold placeholders only
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY rowid {'ASC' if ascending else 'DESC'} LIMIT ?")
    return [(int(r), bytes(raw)) for r, raw in conn.execute(sql, (*params, limit))]


# --- processes and the schedule --------------------------------------------------------------

def process_hosted(conn: sqlite3.Connection, process_id: str) -> bool:
    """Whether ``process_id`` is registered on this node."""
    return conn.execute("SELECT 1 FROM processes WHERE id = ?",
                        (process_id,)).fetchone() is not None


def insert_process(conn: sqlite3.Connection, process: items.Item, module_id: str) -> None:
    """Register a Process item (stored already) as hosted."""
    conn.execute("INSERT INTO processes (id, module_id, owner, created_ms) VALUES (?, ?, ?, ?)",
                 (process.id, module_id, process.owner_address, now_ms()))


def existing_slot(conn: sqlite3.Connection, process_id: str, message_id: str) -> int | None:
    """The slot ``message_id`` already holds in ``process_id``'s schedule, if any."""
    row = conn.execute("SELECT slot FROM schedule WHERE process_id = ? AND message_id = ?",
                       (process_id, message_id)).fetchone()
    return None if row is None else int(row[0])


def last_slot(conn: sqlite3.Connection, process_id: str) -> ScheduledSlot | None:
    """The newest slot of ``process_id``'s schedule."""
    row = conn.execute(f"SELECT {_SLOT_COLUMNS} FROM schedule s WHERE s.process_id = ? "  # noqa: S608
                       "ORDER BY s.slot DESC LIMIT 1", (process_id,)).fetchone()
    return None if row is None else slot_row(row)


def insert_slot(conn: sqlite3.Connection, s: ScheduledSlot, assignment: bytes) -> None:
    """Append a slot to its process's schedule with its signed Assignment item (raw)."""
    conn.execute(
        "INSERT INTO schedule (process_id, slot, message_id, assignment_id, hash_chain, "
        "timestamp_ms, block_height, attestation_id, push_depth, assignment) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)",
        (s.process_id, s.slot, s.message_id, s.assignment_id, s.hash_chain, s.timestamp_ms,
         s.block_height, s.attestation_id, s.push_depth, assignment))


def slot_at(conn: sqlite3.Connection, process_id: str, slot: int) -> ScheduledSlot | None:
    """One slot of a schedule."""
    row = conn.execute(f"SELECT {_SLOT_COLUMNS} FROM schedule s WHERE s.process_id = ? "  # noqa: S608
                       "AND s.slot = ?", (process_id, slot)).fetchone()
    return None if row is None else slot_row(row)


def slot_of(conn: sqlite3.Connection, process_id: str, message_id: str) -> ScheduledSlot | None:
    """The slot ``message_id`` holds in ``process_id``'s schedule."""
    row = conn.execute(f"SELECT {_SLOT_COLUMNS} FROM schedule s WHERE s.process_id = ? "  # noqa: S608
                       "AND s.message_id = ?", (process_id, message_id)).fetchone()
    return None if row is None else slot_row(row)


def schedule_batch(conn: sqlite3.Connection, process_id: str, first: int,
                   limit: int) -> list[tuple[ScheduledSlot, bytes | None]]:
    """Up to ``limit`` slots from ``first`` with their raw message (None when it is missing)."""
    rows = conn.execute(
        f"SELECT {_SLOT_COLUMNS}, i.raw FROM schedule s "  # noqa: S608
        "LEFT JOIN items i ON i.id = s.message_id "
        "WHERE s.process_id = ? AND s.slot >= ? ORDER BY s.slot LIMIT ?",
        (process_id, first, limit)).fetchall()
    return [(slot_row(r[:-1]), None if r[-1] is None else bytes(r[-1])) for r in rows]


def schedule_page(conn: sqlite3.Connection, process_id: str, *, from_ms: int | None,
                  to_ms: int | None, from_slot: int | None, to_slot: int | None,
                  limit: int) -> list[ScheduledSlot]:
    """Slots by slot order: ``from_ms`` exclusive, the other bounds inclusive."""
    where, params = ["s.process_id = ?"], [process_id]
    for column, op, value in (("timestamp_ms", ">", from_ms), ("timestamp_ms", "<=", to_ms),
                              ("slot", ">=", from_slot), ("slot", "<=", to_slot)):
        if value is not None:
            where.append(f"s.{column} {op} ?")
            params.append(value)  # type: ignore[arg-type]
    rows = conn.execute(f"SELECT {_SLOT_COLUMNS} FROM schedule s "  # noqa: S608
                        f"WHERE {' AND '.join(where)} ORDER BY s.slot LIMIT ?",
                        (*params, limit)).fetchall()
    return [slot_row(r) for r in rows]


def schedule_items(conn: sqlite3.Connection, process_id: str, first: int,
                   last: int) -> list[tuple[int, bytes, bytes]]:
    """(slot, raw message item, raw assignment item) of the slots ``first..last``."""
    rows = conn.execute("SELECT s.slot, m.raw, coalesce(s.assignment, a.raw) FROM schedule s "  # noqa: S608
                        f"JOIN items m ON m.id = s.message_id {_OLD_ASSIGNMENT} "
                        "WHERE s.process_id = ? AND s.slot BETWEEN ? AND ? ORDER BY s.slot",
                        (process_id, first, last))
    return [(int(slot), bytes(m), bytes(a)) for slot, m, a in rows if a is not None]


def block_starts(conn: sqlite3.Connection) -> dict[int, int]:
    """The first assignment timestamp (ms) of every block height the schedule names."""
    rows = conn.execute("SELECT block_height, MIN(timestamp_ms) FROM schedule "
                        "GROUP BY block_height")
    return {int(h): int(ts) for h, ts in rows}


def block_start(conn: sqlite3.Connection, height: int) -> int | None:
    """The first assignment timestamp (ms) at ``height``, if any."""
    row = conn.execute("SELECT MIN(timestamp_ms) FROM schedule WHERE block_height = ?",
                       (height,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# Per process ``p``: its last slot, its last slot with a stored result (the newest results row
# is read first: only an intent row is skipped).
_LAST_SLOT = "SELECT max(s.slot) FROM schedule s WHERE s.process_id = p.id"
_LAST_RESULT = ("SELECT r.slot FROM results r WHERE r.process_id = p.id AND "
                "r.result_id IS NOT NULL ORDER BY r.slot DESC LIMIT 1")


def processes_behind(conn: sqlite3.Connection) -> list[str]:
    """Processes with scheduled slots that have no stored result (results are stored in slot
    order, so: whose last slot has none)."""
    rows = conn.execute(f"SELECT p.id FROM processes p WHERE ({_LAST_SLOT}) > "  # noqa: S608
                        f"coalesce(({_LAST_RESULT}), -1)")
    return [str(pid) for (pid,) in rows]


def process_page(conn: sqlite3.Connection, after: int, limit: int) -> list[ProcessRow]:
    """Hosted processes in creation order, after cursor ``after`` (0 for the first page)."""
    rows = conn.execute(
        "SELECT p.rowid, p.id, p.module_id, p.owner, p.created_ms, "  # noqa: S608
        f"coalesce(({_LAST_SLOT}) + 1, 0), coalesce(({_LAST_RESULT}) + 1, 0), "
        "(SELECT max(c.slot) FROM checkpoints c WHERE c.process_id = p.id) "
        "FROM processes p WHERE p.rowid > ? ORDER BY p.rowid LIMIT ?", (after, limit))
    return [ProcessRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]),
                       int(r[6]), None if r[7] is None else int(r[7])) for r in rows]


def process_ids(conn: sqlite3.Connection) -> list[str]:
    """Every hosted process."""
    return [str(r[0]) for r in conn.execute("SELECT id FROM processes")]


def counts(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(hosted processes, slots without a result, outbox items pending delivery elsewhere)."""
    processes = conn.execute("SELECT count(*) FROM processes").fetchone()
    pending = conn.execute("SELECT (SELECT count(*) FROM schedule) - (SELECT count(*) FROM "
                           "results WHERE result_id IS NOT NULL)").fetchone()
    outbox = conn.execute("SELECT count(*) FROM outbox WHERE status IN (?, ?, ?)",
                          (str(OutboxStatus.PENDING_REMOTE), str(OutboxStatus.FORWARDING),
                           str(OutboxStatus.PENDING))).fetchone()
    return int(processes[0]), int(pending[0]), int(outbox[0])


# --- results and intents ---------------------------------------------------------------------

_RESULT_COLUMNS = ("r.process_id, r.slot, r.message_id, r.result_id, r.data, "
                   "coalesce(r.raw, i.raw)")


def _results(rows: Iterable[tuple[Any, ...]]) -> list[ResultRow]:
    return [ResultRow(str(pid), int(slot), str(mid), str(rid), bytes(data), bytes(raw))
            for pid, slot, mid, rid, data, raw in rows if raw is not None]


def result_of(conn: sqlite3.Connection, process_id: str, message_id: str) -> ResultRow | None:
    """The stored result of ``message_id``."""
    rows = conn.execute(
        f"SELECT {_RESULT_COLUMNS} FROM schedule s JOIN results r ON "  # noqa: S608
        f"r.process_id = s.process_id AND r.slot = s.slot {_OLD_RESULT} "
        f"WHERE s.process_id = ? AND s.message_id = ? AND {_SIGNED}", (process_id, message_id))
    found = _results(rows)
    return found[0] if found else None


def results_from(conn: sqlite3.Connection, process_id: str, from_slot: int,
                 limit: int) -> list[ResultRow]:
    """Up to ``limit`` stored results of a process with slot ≥ ``from_slot``, by slot."""
    rows = conn.execute(f"SELECT {_RESULT_COLUMNS} FROM results r {_OLD_RESULT} "  # noqa: S608
                        f"WHERE r.process_id = ? AND r.slot >= ? AND {_SIGNED} ORDER BY r.slot "
                        "LIMIT ?", (process_id, from_slot, limit))
    return _results(rows)


def result_items(conn: sqlite3.Connection, process_id: str, first: int,
                 last: int) -> list[tuple[int, bytes]]:
    """(slot, raw signed Result item) of the stored results in slots ``first..last``."""
    rows = conn.execute(f"SELECT r.slot, coalesce(r.raw, i.raw) FROM results r {_OLD_RESULT} "  # noqa: S608
                        f"WHERE r.process_id = ? AND r.slot BETWEEN ? AND ? AND {_SIGNED} "
                        "ORDER BY r.slot", (process_id, first, last))
    return [(int(slot), bytes(raw)) for slot, raw in rows if raw is not None]


def results_page(conn: sqlite3.Connection, process_id: str, low: int, high: int,
                 descending: bool, limit: int) -> list[tuple[int, bytes]]:
    """(slot, result data) with ``low < slot < high``, ascending or descending."""
    order = "DESC" if descending else "ASC"
    sql = f"SELECT slot, data FROM results WHERE process_id = ? AND slot > ? AND slot < ? AND result_id IS NOT NULL ORDER BY slot {order} LIMIT ?"  # noqa: E501, S608 - only ASC/DESC is interpolated
    return [(int(slot), bytes(data))
            for slot, data in conn.execute(sql, (process_id, low, high, limit))]


def stored_results(conn: sqlite3.Connection, process_id: str, first: int,
                   last: int) -> dict[int, tuple[str, bytes]]:
    """The stored (result id, data) of the slots ``first..last``, keyed by slot."""
    rows = conn.execute("SELECT slot, result_id, data FROM results WHERE process_id = ? AND "
                        "slot BETWEEN ? AND ? AND result_id IS NOT NULL",
                        (process_id, first, last)).fetchall()
    return {int(slot): (str(rid), bytes(data)) for slot, rid, data in rows}


def insert_result(conn: sqlite3.Connection, s: ScheduledSlot, signed: items.Item) -> None:
    """Store a signed Result item as ``s``'s result, in the row holding its intent (a slot
    without one gets a new row; a slot with a signed Result already is an error)."""
    cur = conn.execute("UPDATE results SET result_id = ?, data = ?, raw = ?, unsigned = NULL "
                       "WHERE process_id = ? AND slot = ? AND result_id IS NULL",
                       (signed.id, signed.data, signed.raw, s.process_id, s.slot))
    if cur.rowcount == 0:
        conn.execute("INSERT INTO results (process_id, slot, message_id, result_id, data, raw) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (s.process_id, s.slot, s.message_id, signed.id, signed.data, signed.raw))


def intent_blobs(conn: sqlite3.Connection, process_id: str, first: int,
                 last: int) -> dict[int, bytes]:
    """The recorded intent blobs of the slots ``first..last``, keyed by slot."""
    rows = conn.execute("SELECT slot, unsigned FROM results WHERE process_id = ? AND "
                        "slot BETWEEN ? AND ? AND result_id IS NULL",
                        (process_id, first, last)).fetchall()
    return {int(slot): bytes(blob) for slot, blob in rows}


def insert_intents(conn: sqlite3.Connection,
                   intents: list[tuple[str, int, str, bytes]]) -> None:
    """Record (process, slot, message, encoded unsigned result) intents as results rows without
    a Result yet (a slot that has a row already keeps it)."""
    conn.executemany(
        "INSERT OR IGNORE INTO results (process_id, slot, message_id, data, unsigned) "
        "VALUES (?, ?, ?, x'', ?)", intents)


# --- cron results ----------------------------------------------------------------------------

def insert_cron_result(conn: sqlite3.Connection, seq: int, after_slot: int, timestamp_ms: int,
                       cron: str, rank: int, block_height: int, signed: items.Item) -> None:
    """Record a stored signed cron Result as its process's ``seq``-th cron result."""
    conn.execute("INSERT INTO cron_results (process_id, seq, after_slot, timestamp_ms, cron, "
                 "rank, block_height, result_id, data, raw) VALUES (?,?,?,?,?,?,?,?,?,?)",
                 (signed.target, seq, after_slot, timestamp_ms, cron, rank, block_height,
                  signed.id, signed.data, signed.raw))


def cron_position(conn: sqlite3.Connection, process_id: str,
                  seq: int) -> tuple[int, int, int] | None:
    """(after slot, timestamp ms, rank) of the ``seq``-th cron result."""
    row = conn.execute("SELECT after_slot, timestamp_ms, rank FROM cron_results "
                       "WHERE process_id = ? AND seq = ?", (process_id, seq)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


def cron_link(conn: sqlite3.Connection, process_id: str, seq: int) -> tuple[int, str] | None:
    """(after slot, result id) of the ``seq``-th cron result."""
    row = conn.execute("SELECT after_slot, result_id FROM cron_results WHERE "
                       "process_id = ? AND seq = ?", (process_id, seq)).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def cron_head(conn: sqlite3.Connection, process_id: str, slot: int) -> str | None:
    """The id of the last cron Result after ``slot``."""
    row = conn.execute("SELECT result_id FROM cron_results WHERE process_id = ? AND "
                       "after_slot = ? ORDER BY seq DESC LIMIT 1", (process_id, slot)).fetchone()
    return None if row is None else str(row[0])


def stored_cron_results(conn: sqlite3.Connection, process_id: str, first: int,
                        last: int) -> dict[int, tuple[str, bytes]]:
    """The stored (result id, data) of cron results ``first..last``, keyed by seq."""
    rows = conn.execute("SELECT seq, result_id, data FROM cron_results WHERE process_id = ? "
                        "AND seq BETWEEN ? AND ?", (process_id, first, last))
    return {int(r[0]): (str(r[1]), bytes(r[2])) for r in rows}


def cron_page(conn: sqlite3.Connection, process_id: str, *, after: tuple[int, str, str] | None,
              since_ms: int | None, upto: tuple[int, str | None, str | None] | None,
              limit: int) -> list[CronRow]:
    """Cron results in evaluation order: ``after`` (timestamp, ordinate, cron) exclusive,
    ``since_ms`` and ``upto`` inclusive; ordinate and cron compare as text."""
    where, params = ["process_id = ?"], [process_id]
    if after is not None:
        where.append("(timestamp_ms > ? OR (timestamp_ms = ? AND (CAST(after_slot AS TEXT) "
                     "> ? OR (CAST(after_slot AS TEXT) = ? AND cron > ?))))")
        params += [after[0], after[0], after[1], after[1], after[2]]  # type: ignore[list-item]
    if since_ms is not None:
        where.append("timestamp_ms >= ?")
        params.append(since_ms)  # type: ignore[arg-type]
    if upto is not None:
        ts, ordinate, cron = upto
        if ordinate is None:
            where.append("timestamp_ms <= ?")
            params.append(ts)  # type: ignore[arg-type]
        else:
            where.append("(timestamp_ms < ? OR (timestamp_ms = ? AND (CAST(after_slot AS "
                         "TEXT) < ? OR (CAST(after_slot AS TEXT) = ? AND cron <= ?))))")
            params += [ts, ts, ordinate, ordinate, cron or ""]  # type: ignore[list-item]
    rows = conn.execute(
        "SELECT timestamp_ms, after_slot, cron, data FROM cron_results WHERE "  # noqa: S608
        f"{' AND '.join(where)} ORDER BY seq LIMIT ?", (*params, limit))
    return [CronRow(int(ts), int(after_slot), str(cron), bytes(data))
            for ts, after_slot, cron, data in rows]


def cron_result_items(conn: sqlite3.Connection, process_id: str, first_slot: int,
                      last_slot: int) -> list[bytes]:
    """Raw cron Result items after slots ``first_slot..last_slot``, in chain order."""
    rows = conn.execute("SELECT coalesce(c.raw, i.raw) FROM cron_results c LEFT JOIN items i "
                        "ON c.raw IS NULL AND i.id = c.result_id WHERE c.process_id = ? AND "
                        "c.after_slot BETWEEN ? AND ? ORDER BY c.seq",
                        (process_id, first_slot, last_slot))
    return [bytes(r[0]) for r in rows if r[0] is not None]


# --- checkpoints -----------------------------------------------------------------------------

_CHECKPOINT = "SELECT slot, file, sha256, raw_size, clock, crons FROM checkpoints "


def _checkpoint(row: tuple[Any, ...]) -> CheckpointRow:
    return CheckpointRow(int(row[0]), Path(row[1]), str(row[2]), int(row[3]), int(row[4]),
                         int(row[5]))


def checkpoints(conn: sqlite3.Connection, process_id: str) -> list[CheckpointRow]:
    """A process's checkpoints, newest first."""
    rows = conn.execute(_CHECKPOINT + "WHERE process_id = ? ORDER BY slot DESC", (process_id,))
    return [_checkpoint(r) for r in rows]


def checkpoint_at(conn: sqlite3.Connection, process_id: str, slot: int) -> CheckpointRow | None:
    """The checkpoint taken at ``slot``."""
    row = conn.execute(_CHECKPOINT + "WHERE process_id = ? AND slot = ?",
                       (process_id, slot)).fetchone()
    return None if row is None else _checkpoint(row)


def latest_checkpoint(conn: sqlite3.Connection, process_id: str) -> CheckpointRow | None:
    """A process's newest checkpoint."""
    row = conn.execute(_CHECKPOINT + "WHERE process_id = ? ORDER BY slot DESC LIMIT 1",
                       (process_id,)).fetchone()
    return None if row is None else _checkpoint(row)


def insert_checkpoint(conn: sqlite3.Connection, process_id: str, slot: int, file: Path,
                      sha256: str, raw_size: int, clock: int, crons: int) -> None:
    """Record (or replace) the checkpoint of ``process_id`` at ``slot``."""
    conn.execute("INSERT OR REPLACE INTO checkpoints (process_id, slot, file, sha256, raw_size, "
                 "clock, item_id, created_ms, crons) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?)",
                 (process_id, slot, str(file), sha256, raw_size, clock, now_ms(), crons))


def set_checkpoint_sha256(conn: sqlite3.Connection, process_id: str, slot: int,
                          sha256: str) -> None:
    """Record the memory SHA-256 of a checkpoint computed after it was taken."""
    conn.execute("UPDATE checkpoints SET sha256 = ? WHERE process_id = ? AND slot = ?",
                 (sha256, process_id, slot))


def forget_checkpoints(conn: sqlite3.Connection, process_id: str, newest: int,
                       kept: int) -> list[str]:
    """Delete all but the ``kept`` newest checkpoints up to ``newest``; return their files."""
    rows = conn.execute(
        "SELECT slot, file FROM checkpoints WHERE process_id = ? AND slot <= ? "
        "ORDER BY slot DESC LIMIT -1 OFFSET ?", (process_id, newest, kept)).fetchall()
    conn.executemany("DELETE FROM checkpoints WHERE process_id = ? AND slot = ?",
                     [(process_id, slot) for slot, _ in rows])
    return [str(file) for _, file in rows]


# --- outbox and meta -------------------------------------------------------------------------

def record_outbox(conn: sqlite3.Connection, item_id: str, from_process: str, from_slot: int,
                  target: str, kind: str, status: OutboxStatus, detail: str,
                  depth: int) -> None:
    """Record what became of one pushed outbox item (kept when already recorded)."""
    conn.execute(
        "INSERT OR IGNORE INTO outbox (item_id, from_process, from_slot, target, kind, status, "
        "detail, push_depth, created_ms) VALUES (?,?,?,?,?,?,?,?,?)",
        (item_id, from_process, from_slot, target, kind, str(status), detail, depth, now_ms()))


def outbox_recorded(conn: sqlite3.Connection, key: str) -> bool:
    """True when the outbox holds a row ``key``."""
    return conn.execute("SELECT 1 FROM outbox WHERE item_id = ?", (key,)).fetchone() is not None


def outbox_sender(conn: sqlite3.Connection, key: str) -> str | None:
    """The process whose outbox holds row ``key``."""
    row = conn.execute("SELECT from_process FROM outbox WHERE item_id = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def outbox_forwarding(conn: sqlite3.Connection) -> list[tuple[str, str, str, int]]:
    """(row key, target, kind, push depth) of outbox items still to hand to another shard."""
    rows = conn.execute("SELECT item_id, target, kind, push_depth FROM outbox WHERE status = ? "
                        "ORDER BY created_ms", (str(OutboxStatus.FORWARDING),))
    return [(str(k), str(t), str(kind), int(d)) for k, t, kind, d in rows]


def set_outbox_status(conn: sqlite3.Connection, key: str, status: OutboxStatus,
                      detail: str) -> None:
    """Record what became of outbox row ``key`` after it was forwarded."""
    conn.execute("UPDATE outbox SET status = ?, detail = ? WHERE item_id = ?",
                 (str(status), detail, key))


@dataclass(frozen=True)
class PendingPush:
    """An outbox row the courier is to push to a peer."""

    key: str
    from_process: str
    from_slot: int
    target: str
    kind: str
    raw: bytes
    depth: int


def outbox_pending(conn: sqlite3.Connection, limit: int) -> list[PendingPush]:
    """Up to ``limit`` outbox rows still ``pending``, in order per sending process (slot, then
    outbox index: rows of one result are inserted in outbox order)."""
    rows = conn.execute(
        "SELECT o.item_id, o.from_process, o.from_slot, o.target, o.kind, i.raw, o.push_depth "
        "FROM outbox o "
        "LEFT JOIN items i ON i.id = o.item_id WHERE o.status = ? "
        "ORDER BY o.from_process, o.from_slot, o.rowid LIMIT ?",
        (str(OutboxStatus.PENDING), limit)).fetchall()
    pending = []
    for k, p, s, t, kind, joined, d in rows:
        raw = item_raw(conn, str(k).partition(">")[0]) if joined is None and \
            kind == "assignment" else joined  # key "message>target": the message's bytes
        if raw is not None:
            pending.append(PendingPush(str(k), str(p), int(s), str(t), str(kind), bytes(raw),
                                       int(d)))
    return pending


def outbox_failures(conn: sqlite3.Connection, limit: int) -> list[tuple[str, str, str, str]]:
    """(row key, target, status, reason) of the newest ``limit`` outbox rows that ended without
    delivery (``failed``, ``pending-remote``)."""
    rows = conn.execute(
        "SELECT item_id, target, status, coalesce(detail, '') FROM outbox "
        "WHERE status IN (?, ?) ORDER BY rowid DESC LIMIT ?",
        (str(OutboxStatus.FAILED), str(OutboxStatus.PENDING_REMOTE), limit))
    return [(str(k), str(t), str(st), str(d)) for k, t, st, d in rows]


def pushed_duplicate(conn: sqlite3.Connection, process_id: str, from_process: str,
                     pushed_for: str, reference: str) -> str | None:
    """The message already scheduled on ``process_id`` that ``from_process`` pushed for the
    same message (``Pushed-For``) with the same ``Reference``, as AO's MU de-duplicates."""
    row = conn.execute(  # driven by Pushed-For (a message id: few rows), not Reference
        "SELECT s.message_id FROM item_tags p "
        "JOIN items i ON i.rowid = p.item_row "
        "JOIN schedule s ON s.process_id = ? AND s.message_id = i.id "
        "WHERE p.name = 'Pushed-For' AND p.value = ? "
        "AND EXISTS (SELECT 1 FROM item_tags r WHERE r.item_row = p.item_row "
        "AND r.name = 'Reference' AND r.value = ?) "
        "AND EXISTS (SELECT 1 FROM item_tags f WHERE f.item_row = p.item_row "
        "AND f.name = 'From-Process' AND f.value = ?) LIMIT 1",
        (process_id, pushed_for, reference, from_process)).fetchone()
    return None if row is None else str(row[0])


def outbox_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Outbox entry counts keyed by status."""
    rows = conn.execute("SELECT status, count(*) FROM outbox GROUP BY status")
    return {str(status): int(count) for status, count in rows}


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Set a value in the meta table."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def meta(conn: sqlite3.Connection, key: str) -> str | None:
    """A value from the meta table."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])
