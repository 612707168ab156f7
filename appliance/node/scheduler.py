"""Scheduler (SU role): gives each accepted item its slot, hash chain and signed Assignment.

Every function here runs inside the store's writer transaction, so a slot, its Assignment and
the scheduled item become durable together or not at all, and slots are handed out by a single
thread: a slot is never reused and the chain never forks.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from appliance.ao import items
from appliance.errors import BadRequest, NotFound
from appliance.node.chain import first_hash_chain, next_hash_chain
from appliance.node.guest import ScheduledSlot
from appliance.node.identity import NodeIdentity

ASSIGNMENT_KIND = "assignment"
RESULT_KIND = "result"
# The node's own Assignments and Results are searchable by these tags only. Their other tags
# hold ids and hashes (Message, Hash-Chain, Previous-Result, ...) whose random values cost an
# index page each per message: indexing all of them cost a third of the pipeline's throughput.
# The SU and CU routes find those items by message and slot instead.
NODE_ITEM_TAGS = frozenset({"Type", "Process"})
_NODE_KINDS = frozenset({ASSIGNMENT_KIND, RESULT_KIND})


@dataclass(frozen=True)
class SchedulerContext:
    """What scheduling needs besides the transaction: who signs, which attestation, which height."""

    identity: NodeIdentity
    attestation_id: str
    block_height: int


def store_item(conn: sqlite3.Connection, item: items.Item, kind: str) -> bool:
    """Insert an item and index its searchable tags; ``False`` when it was already stored."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO items (id, raw, owner, target, kind, created_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (item.id, item.raw, item.owner_address, item.target or None, kind, _now_ms()))
    if cur.rowcount == 0:
        return False
    row = cur.lastrowid
    only = NODE_ITEM_TAGS if kind in _NODE_KINDS else None
    conn.executemany(
        "INSERT INTO item_tags (item_row, position, name, value) VALUES (?, ?, ?, ?)",
        [(row, i, name, value) for i, (name, value) in enumerate(item.tags)
         if only is None or name in only])
    return True


def load_item(conn: sqlite3.Connection, item_id: str) -> items.Item | None:
    """A stored item, parsed (its signature was verified when it was accepted)."""
    row = conn.execute("SELECT raw FROM items WHERE id = ?", (item_id,)).fetchone()
    return None if row is None else items.parse_unverified(bytes(row[0]))


def existing_slot(conn: sqlite3.Connection, process_id: str, message_id: str) -> int | None:
    """The slot ``message_id`` already holds in ``process_id``'s schedule, if any."""
    row = conn.execute("SELECT slot FROM schedule WHERE process_id = ? AND message_id = ?",
                       (process_id, message_id)).fetchone()
    return None if row is None else int(row[0])


def assign(conn: sqlite3.Connection, ctx: SchedulerContext, process_id: str, message_id: str,
           push_depth: int) -> ScheduledSlot:
    """Append ``message_id`` to ``process_id``'s schedule with a signed Assignment item."""
    last = conn.execute(
        "SELECT slot, assignment_id, hash_chain, timestamp_ms FROM schedule "
        "WHERE process_id = ? ORDER BY slot DESC LIMIT 1", (process_id,)).fetchone()
    if last is None:
        slot, hash_chain, timestamp = 0, first_hash_chain(process_id), _now_ms()
    else:
        slot = int(last[0]) + 1
        hash_chain = next_hash_chain(str(last[1]), str(last[2]))
        # Strictly increasing: clients page the schedule by timestamp with ``from`` exclusive
        # (AO's CU does), so two slots sharing a millisecond would split across pages and one
        # would be skipped.
        timestamp = max(_now_ms(), int(last[3]) + 1)
    tags = [
        ("Process", process_id), ("Epoch", "0"), ("Nonce", str(slot)),
        ("Hash-Chain", hash_chain), ("Block-Height", str(ctx.block_height)),
        ("Timestamp", str(timestamp)), ("Data-Protocol", "ao"), ("Type", "Assignment"),
        ("Variant", "ao.TN.1"), ("Message", message_id),
    ]
    assignment = items.sign(ctx.identity, tags=tags)
    store_item(conn, assignment, ASSIGNMENT_KIND)
    scheduled = ScheduledSlot(process_id, slot, message_id, assignment.id, hash_chain, timestamp,
                              ctx.block_height, ctx.attestation_id, push_depth)
    conn.execute(
        "INSERT INTO schedule (process_id, slot, message_id, assignment_id, hash_chain, "
        "timestamp_ms, block_height, attestation_id, push_depth) VALUES (?,?,?,?,?,?,?,?,?)",
        (process_id, slot, message_id, assignment.id, hash_chain, timestamp, ctx.block_height,
         ctx.attestation_id, push_depth))
    return scheduled


def create_process(conn: sqlite3.Connection, ctx: SchedulerContext, process: items.Item,
                   push_depth: int = 0) -> int:
    """Register a Process item (its module must be stored) and give it slot 0."""
    module_id = items.first_tag(process, "Module")
    if not module_id:
        raise BadRequest("a Process item needs a Module tag")
    if conn.execute("SELECT 1 FROM items WHERE id = ? AND kind = 'module'",
                    (module_id,)).fetchone() is None:
        raise NotFound(f"module {module_id} is not stored on this node; upload it first")
    if conn.execute("SELECT 1 FROM processes WHERE id = ?", (process.id,)).fetchone():
        return 0
    store_item(conn, process, "process")
    conn.execute("INSERT INTO processes (id, module_id, owner, created_ms) VALUES (?, ?, ?, ?)",
                 (process.id, module_id, process.owner_address, _now_ms()))
    assign(conn, ctx, process.id, process.id, push_depth)
    return 0


def schedule_message(conn: sqlite3.Connection, ctx: SchedulerContext, message: items.Item,
                     process_id: str, push_depth: int) -> int:
    """Store a message for a hosted process and schedule it (idempotent per message id)."""
    if conn.execute("SELECT 1 FROM processes WHERE id = ?", (process_id,)).fetchone() is None:
        raise NotFound(f"process {process_id} is not hosted on this node")
    # A message that was not stored before cannot hold a slot yet (slots name stored items).
    if not store_item(conn, message, "message"):
        slot = existing_slot(conn, process_id, message.id)
        if slot is not None:
            return slot
    return assign(conn, ctx, process_id, message.id, push_depth).slot


def slot_row(row: tuple[object, ...]) -> ScheduledSlot:
    """A ``schedule`` row (all columns, in table order) as a :class:`ScheduledSlot`."""
    pid, slot, mid, aid, hc, ts, bh, att, depth = row
    return ScheduledSlot(str(pid), int(str(slot)), str(mid), str(aid), str(hc), int(str(ts)),
                         int(str(bh)), str(att), int(str(depth)))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
