"""Messenger (MU role): turns a result's outbox into node-signed items, in the result's transaction.

Pushed items are built deterministically (content and anchor derive from the result), so
re-deriving a result after a crash yields the same item ids and scheduling is idempotent: a
pushed message is delivered once. Local targets are scheduled at once; a target another shard of
the node owns is recorded ``forwarding`` and pushed to that shard once the result is committed
(:class:`Forwarding`; the shard marks it ``scheduled`` when the owner stored it); on a node with
peers, targets this node does not host are recorded ``pending`` for the courier
(:mod:`appliance.network.courier`) to push to the peer hosting them; without peers they stay in
the durable outbox as ``pending-remote``. Chains deeper than the configured bound are recorded as
``dropped-depth``. An Assignment to a process a peer hosts is recorded ``pending`` under
:func:`assignment_key` and assigned there by the courier. Once a Spawn is scheduled, its parent
gets the ``Action: Spawned`` notice (:func:`spawned_notice`), as AO's MU sends it.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from appliance.ao import items
from appliance.errors import NotFound, RequestError
from appliance.logfmt import fields
from appliance.node.db import queries
from appliance.node.db.kinds import ItemKind, OutboxStatus
from appliance.node.guest import ScheduledSlot
from appliance.node.identity import NodeIdentity
from appliance.node.routing import ShardRouter
from appliance.node.scheduler import (
    SchedulerContext,
    assign,
    create_process,
    existing_slot,
    load_item,
    schedule_message,
    store_item,
)

log = logging.getLogger("appliance.messenger")

_PROTOCOL_TAGS = (("Data-Protocol", "ao"), ("Variant", "ao.TN.1"))


@dataclass(frozen=True)
class PushContext:
    """Where the outbox came from."""

    slot: ScheduledSlot
    module_id: str
    max_depth: int
    cron_seq: int | None = None
    """Set for a cron message's outbox: its items' anchors derive from it, not the slot."""


@dataclass(frozen=True)
class Outgoing:
    """One signed item of an outbox and where it goes (``kind``: ``message`` or ``spawn``)."""

    item: items.Item
    target: str
    kind: str


@dataclass(frozen=True)
class Outbox:
    """A result's outbox, signed and ready to store: built outside the store's transaction."""

    push: PushContext
    outgoing: tuple[Outgoing, ...]
    assignments: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Forward:
    """An outbox item another shard owns, to push to it after the result's commit."""

    key: str
    """Its outbox row: the item's id, or :func:`assignment_key` for an Assignment."""
    target: str
    raw: bytes
    kind: str
    depth: int


@dataclass
class Forwarding:
    """What :func:`push_outbox` needs to hand items to other shards, and collects."""

    router: ShardRouter
    forwards: list[Forward] = field(default_factory=list)

    def elsewhere(self, conn: sqlite3.Connection, process_id: str) -> bool:
        """True when another shard holds ``process_id`` (a process stored here stays here)."""
        return not queries.process_hosted(conn, process_id) and not self.router.owns(process_id)

    def spawned_elsewhere(self, process_id: str) -> bool:
        """True when the new process ``process_id`` is placed on another shard."""
        return not self.router.places(process_id)


def assignment_key(message_id: str, target: str) -> str:
    """The outbox row of a forwarded Assignment of ``message_id`` to ``target``."""
    return f"{message_id}>{target}"


def split_assignment_key(key: str) -> tuple[str, str]:
    """(message id, target) of an :func:`assignment_key`."""
    message_id, _, target = key.partition(">")
    return message_id, target


def prepare_outbox(identity: NodeIdentity, push: PushContext, result: dict[str, Any]) -> Outbox:
    """Sign the Messages and Spawns of one result (pure: no store access)."""
    outgoing = [Outgoing(_build(identity, push, message, index, "Message"),
                         str(message.get("Target") or ""), "message")
                for index, message in enumerate(_entries(result.get("Messages")))]
    outgoing += [Outgoing(_build(identity, push, spawn, index, "Process"), "", "spawn")
                 for index, spawn in enumerate(_entries(result.get("Spawns")))]
    return Outbox(push, tuple(outgoing), tuple(_entries(result.get("Assignments"))))


def push_outbox(conn: sqlite3.Connection, ctx: SchedulerContext, outbox: Outbox,
                forwarding: Forwarding | None = None, *, peered: bool = False) -> set[str]:
    """Deliver a prepared outbox; return the processes to wake. Items another shard owns are
    recorded ``forwarding`` and added to ``forwarding.forwards`` (none without it); with
    ``peered``, items for targets no shard of this node hosts are recorded ``pending`` (the
    courier pushes them to peers), else ``pending-remote``."""
    woken: set[str] = set()
    push = outbox.push
    depth = push.slot.push_depth + 1
    for out in outbox.outgoing:
        woken |= _deliver(conn, ctx, push, out.item, out.target, depth, out.kind, forwarding,
                          peered)
    for assignment in outbox.assignments:
        woken |= _assign_existing(conn, ctx, push, assignment, depth, forwarding, peered)
    return woken


def _entries(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _anchor(push: PushContext, kind: str, index: int, given: Any) -> bytes:
    if isinstance(given, str) and len(given.encode()) == 32:
        return given.encode()
    origin = f"{push.slot.slot}" if push.cron_seq is None else f"cron/{push.cron_seq}"
    seed = f"{push.slot.process_id}/{origin}/{kind}/{index}".encode()
    return hashlib.sha256(seed).digest()


def _build(identity: NodeIdentity, push: PushContext, entry: dict[str, Any], index: int,
           kind: str) -> items.Item:
    tags = [(str(t.get("name")), str(t.get("value"))) for t in entry.get("Tags") or []
            if isinstance(t, dict) and "name" in t and "value" in t]
    names = {name for name, _ in tags}
    extra = [*_PROTOCOL_TAGS, ("Type", kind), ("From-Process", push.slot.process_id),
             ("From-Module", push.module_id)]
    if push.cron_seq is None:  # a cron message has no id to name
        extra.append(("Pushed-For", push.slot.message_id))
    if kind == "Process":
        extra.append(("Scheduler", identity.address))
    tags += [(n, v) for n, v in extra if n not in names]
    data = entry.get("Data")
    payload = data.encode() if isinstance(data, str) else b""
    target = str(entry.get("Target") or "") if kind == "Message" else ""
    return items.sign(identity, target=target or None,
                      anchor=_anchor(push, kind, index, entry.get("Anchor")), tags=tags,
                      data=payload)


SPAWNED_DROPPED_TAGS = frozenset({"Data-Protocol", "Variant", "Type", "From-Process",
                                  "From-Module", "Pushed-For", "Scheduler", "Process", "Action"})


def spawned_notice(identity: NodeIdentity, spawn: items.Item, parent: str) -> items.Item:
    """The ``Action: Spawned`` message AO's MU sends ``parent`` once its Spawn ``spawn`` (the
    new process's item) is scheduled: the spawn's own tags (its ``Reference`` among them) with
    ``Type: Message``, ``Action: Spawned`` and the child's id as ``Process`` and
    ``From-Process``; node-signed, its anchor derived from the child's id, so building it again
    (after a crash) gives the same item."""
    variant = items.first_tag(spawn, "Variant") or "ao.TN.1"
    tags = [(n, v) for n, v in spawn.tags if n not in SPAWNED_DROPPED_TAGS]
    tags += [("Data-Protocol", "ao"), ("Variant", variant), ("Type", "Message"),
             ("From-Process", spawn.id), ("Process", spawn.id), ("Action", "Spawned")]
    anchor = hashlib.sha256(f"{spawn.id}/Spawned".encode()).digest()
    return items.sign(identity, target=parent, anchor=anchor, tags=tags, data=b"")


def schedule_spawned(conn: sqlite3.Connection, ctx: SchedulerContext, spawn: items.Item,
                     parent: str, depth: int) -> bool:
    """Schedule the Spawned notice of ``spawn`` on ``parent`` (idempotent); False when this
    node does not host ``parent``."""
    try:
        schedule_message(conn, ctx, spawned_notice(ctx.identity, spawn, parent), parent, depth)
    except NotFound:
        return False
    return True


def _record(conn: sqlite3.Connection, push: PushContext, item: items.Item, target: str,
            kind: str, status: OutboxStatus, detail: str, depth: int) -> None:
    queries.record_outbox(conn, item.id, push.slot.process_id, push.slot.slot, target, kind,
                          status, detail, depth)


def _deliver(conn: sqlite3.Connection, ctx: SchedulerContext, push: PushContext,
             item: items.Item, target: str, depth: int, kind: str,
             forwarding: Forwarding | None, peered: bool = False) -> set[str]:
    if depth > push.max_depth:
        store_item(conn, item, ItemKind(kind))
        _record(conn, push, item, target, kind, OutboxStatus.DROPPED_DEPTH,
                f"push depth {depth} exceeds {push.max_depth}", depth)
        log.warning("%s", fields("outbox delivery failed", process=push.slot.process_id,
                                 slot=push.slot.slot, item=item.id, kind=kind,
                                 target=target or None, status=OutboxStatus.DROPPED_DEPTH,
                                 reason=f"push depth {depth} exceeds {push.max_depth}"))
        return set()
    owner = item.id if kind == "spawn" else target
    if kind == "spawn" and peered and \
            items.first_tag(item, "Scheduler") not in (None, ctx.identity.address):
        store_item(conn, item, ItemKind(kind))  # its Scheduler is a peer: the courier pushes it
        _record(conn, push, item, item.id, kind, OutboxStatus.PENDING, "", depth)
        return set()
    if forwarding is not None and owner and (
            forwarding.spawned_elsewhere(owner) if kind == "spawn"
            else forwarding.elsewhere(conn, owner)):
        store_item(conn, item, ItemKind(kind))
        _record(conn, push, item, owner, kind, OutboxStatus.FORWARDING, "", depth)
        forwarding.forwards.append(Forward(item.id, owner, item.raw, kind, depth))
        return set()
    try:
        if kind == "spawn":
            create_process(conn, ctx, item, depth)
            target = item.id
            if forwarding is not None:
                forwarding.router.placed(item.id)
            schedule_spawned(conn, ctx, item, push.slot.process_id, depth)
        else:
            schedule_message(conn, ctx, item, target, depth)
    except RequestError as exc:
        store_item(conn, item, ItemKind(kind))
        if peered and kind == "message" and isinstance(exc, NotFound):
            _record(conn, push, item, target, kind, OutboxStatus.PENDING, "", depth)
            return set()
        _record(conn, push, item, target, kind, OutboxStatus.PENDING_REMOTE, str(exc), depth)
        log.warning("%s", fields("outbox delivery failed", process=push.slot.process_id,
                                 slot=push.slot.slot, item=item.id, kind=kind,
                                 target=target or None, status=OutboxStatus.PENDING_REMOTE,
                                 reason=str(exc)))
        return set()
    _record(conn, push, item, target, kind, OutboxStatus.SCHEDULED, "", depth)
    return {target, push.slot.process_id} if kind == "spawn" else {target}


def _assign_existing(conn: sqlite3.Connection, ctx: SchedulerContext, push: PushContext,
                     entry: dict[str, Any], depth: int,
                     forwarding: Forwarding | None, peered: bool = False) -> set[str]:
    message_id = str(entry.get("Message") or "")
    processes = entry.get("Processes")
    woken: set[str] = set()
    if not message_id or not isinstance(processes, list):
        return woken
    known = queries.item_stored(conn, message_id)
    for target in map(str, processes):
        if not known or depth > push.max_depth:
            continue
        if forwarding is not None and forwarding.elsewhere(conn, target):
            key = assignment_key(message_id, target)
            message = load_item(conn, message_id)
            if message is not None and not queries.outbox_recorded(conn, key):
                queries.record_outbox(conn, key, push.slot.process_id, push.slot.slot, target,
                                      "assignment", OutboxStatus.FORWARDING, "", depth)
                forwarding.forwards.append(Forward(key, target, message.raw, "assignment",
                                                   depth))
            continue
        if not queries.process_hosted(conn, target):
            key = assignment_key(message_id, target)
            if peered and not queries.outbox_recorded(conn, key):  # the courier assigns it there
                queries.record_outbox(conn, key, push.slot.process_id, push.slot.slot, target,
                                      "assignment", OutboxStatus.PENDING, "", depth)
            continue
        if existing_slot(conn, target, message_id) is None:
            assign(conn, ctx, target, message_id, depth)
            woken.add(target)
    return woken
