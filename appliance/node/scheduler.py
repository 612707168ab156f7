"""Scheduler (SU role): gives each accepted item its slot, hash chain and signed Assignment.

Every function here runs inside the store's writer transaction, so a slot, its Assignment and
the scheduled item become durable together or not at all, and slots are handed out by a single
thread: a slot is never reused and the chain never forks.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from appliance.ao import items
from appliance.errors import BadRequest, NotFound
from appliance.node.chain import first_hash_chain, next_hash_chain
from appliance.node.db import queries
from appliance.node.db.kinds import ItemKind
from appliance.node.db.queries import existing_slot, load_item, slot_row, store_item
from appliance.node.guest import ScheduledSlot
from appliance.node.identity import NodeIdentity


@dataclass(frozen=True)
class SchedulerContext:
    """What scheduling needs besides the transaction: who signs, which attestation, which height."""

    identity: NodeIdentity
    attestation_id: str
    block_height: int


def assign(conn: sqlite3.Connection, ctx: SchedulerContext, process_id: str, message_id: str,
           push_depth: int) -> ScheduledSlot:
    """Append ``message_id`` to ``process_id``'s schedule with a signed Assignment item (held
    in the schedule row)."""
    return _append(conn, ctx, queries.last_slot(conn, process_id), process_id, message_id,
                   push_depth)


def _append(conn: sqlite3.Connection, ctx: SchedulerContext, last: ScheduledSlot | None,
            process_id: str, message_id: str, push_depth: int) -> ScheduledSlot:
    if last is None:
        slot, hash_chain, timestamp = 0, first_hash_chain(process_id), _now_ms()
    else:
        slot = last.slot + 1
        hash_chain = next_hash_chain(last.assignment_id, last.hash_chain)
        # Strictly increasing: clients page the schedule by timestamp with ``from`` exclusive
        # (AO's CU does), so two slots sharing a millisecond would split across pages and one
        # would be skipped.
        timestamp = max(_now_ms(), last.timestamp_ms + 1)
    tags = [
        ("Process", process_id), ("Epoch", "0"), ("Nonce", str(slot)),
        ("Hash-Chain", hash_chain), ("Block-Height", str(ctx.block_height)),
        ("Timestamp", str(timestamp)), ("Data-Protocol", "ao"), ("Type", "Assignment"),
        ("Variant", "ao.TN.1"), ("Message", message_id),
    ]
    raw, assignment_id = items.signed_raw(ctx.identity, tags=tags)
    scheduled = ScheduledSlot(process_id, slot, message_id, assignment_id, hash_chain, timestamp,
                              ctx.block_height, ctx.attestation_id, push_depth)
    queries.insert_slot(conn, scheduled, raw)
    return scheduled


def create_process(conn: sqlite3.Connection, ctx: SchedulerContext, process: items.Item,
                   push_depth: int = 0) -> int:
    """Register a Process item (its module must be stored) and give it slot 0."""
    module_id = items.first_tag(process, "Module")
    if not module_id:
        raise BadRequest("a Process item needs a Module tag")
    if not queries.item_stored(conn, module_id, ItemKind.MODULE):
        raise NotFound(f"module {module_id} is not stored on this node; upload it first")
    if queries.process_hosted(conn, process.id):
        return 0
    store_item(conn, process, ItemKind.PROCESS)
    queries.insert_process(conn, process, module_id)
    assign(conn, ctx, process.id, process.id, push_depth)
    return 0


def schedule_message(conn: sqlite3.Connection, ctx: SchedulerContext, message: items.Item,
                     process_id: str, push_depth: int) -> int:
    """Store a message for a hosted process and schedule it (idempotent per message id)."""
    # A hosted process has its slot 0 from the transaction that registered it.
    last = queries.last_slot(conn, process_id)
    if last is None:
        raise NotFound(f"process {process_id} is not hosted on this node")
    # A message that was not stored before cannot hold a slot yet (slots name stored items).
    if not store_item(conn, message, ItemKind.MESSAGE):
        slot = existing_slot(conn, process_id, message.id)
        if slot is not None:
            return slot
    return _append(conn, ctx, last, process_id, message.id, push_depth).slot


_now_ms = queries.now_ms


__all__ = ["SchedulerContext", "assign", "create_process", "existing_slot", "load_item",
           "schedule_message", "slot_row", "store_item"]
