"""What the database's ``kind`` and ``status`` columns hold, as enums (their values are the
strings earlier versions stored, so existing databases read the same)."""

from __future__ import annotations

from enum import StrEnum


class ItemKind(StrEnum):
    """Why the node stores an item (``items.kind``)."""

    MODULE = "module"
    PROCESS = "process"
    MESSAGE = "message"
    ASSIGNMENT = "assignment"
    RESULT = "result"
    ATTESTATION = "attestation"
    SCHEDULER_LOCATION = "scheduler-location"
    SPAWN = "spawn"


class OutboxStatus(StrEnum):
    """What became of a pushed outbox item (``outbox.status``)."""

    SCHEDULED = "scheduled"
    FORWARDING = "forwarding"
    """Another shard of the node owns the target; pushed to it after the commit, then
    ``scheduled`` (or ``pending-remote`` when it refused it)."""
    PENDING_REMOTE = "pending-remote"
    """Final: no node this one knows hosts the target (a wallet: every aos reply goes to one),
    or a shard of this node refused it. Never retried."""
    DROPPED_DEPTH = "dropped-depth"
    PENDING = "pending"
    """A peer may host the target: the courier pushes it (in order per sending process, retried
    with back-off), then ``delivered``, ``failed`` or ``pending-remote``."""
    DELIVERED = "delivered"
    """The peer hosting the target acknowledged it (``detail``: its receipt, JSON)."""
    FAILED = "failed"
    """Final: the peer refused it (4xx; ``detail``: the peer's reason). Never retried."""
