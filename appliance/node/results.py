"""The signed result chain: one node-signed Result item per (process, slot), never two.

Before a result is signed its unsigned form (tags + data) is recorded durably as an *intent*.
After a crash between signing and storing, the slot is evaluated again and the recorded intent,
not the fresh computation, is what gets signed: ed25519 signatures are deterministic, so the
node signs byte-identical items and can never publish two different results for one slot.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.ao import items
from appliance.node.chain import canonical_json
from appliance.node.cron import CronTick
from appliance.node.db import queries
from appliance.node.db.queries import stored_results
from appliance.node.guest import ScheduledSlot
from appliance.node.identity import NodeIdentity

RESULT_KEYS = ("Output", "Messages", "Spawns", "Assignments", "Error", "GasUsed")


_INTENT_MARK = b"I1"
_INTENT = struct.Struct("<2sII")


@dataclass(frozen=True)
class UnsignedResult:
    """Everything that goes into a Result item except its signature."""

    process_id: str
    slot: int
    tags: tuple[tuple[str, str], ...]
    data: bytes

    def encode(self) -> bytes:
        """The durable intent form: a marker, tag count and length, the tags as the item will
        carry them (Avro), then the data."""
        tag_bytes = items.encode_tags(self.tags)
        return _INTENT.pack(_INTENT_MARK, len(self.tags), len(tag_bytes)) + tag_bytes + self.data

    @classmethod
    def decode(cls, process_id: str, slot: int, blob: bytes) -> UnsignedResult:
        """Inverse of :meth:`encode`; also reads the JSON form earlier versions wrote."""
        if not blob.startswith(_INTENT_MARK):
            value = json.loads(blob)
            return cls(process_id, slot, tuple((str(n), str(v)) for n, v in value["tags"]),
                       str(value["data"]).encode("utf-8"))
        _, count, size = _INTENT.unpack_from(blob)
        start = _INTENT.size
        tags = items.decode_tags(blob[start:start + size], count)
        return cls(process_id, slot, tuple(tags), blob[start + size:])

    @property
    def message_id(self) -> str:
        """The message this is the result of (its ``Message`` tag; a cron result has none)."""
        return next((value for name, value in self.tags if name == "Message"), "")

    def sign(self, identity: NodeIdentity) -> items.Item:
        """The Result item (target = process, no anchor, deterministic signature)."""
        return items.sign(identity, target=self.process_id, tags=list(self.tags), data=self.data)


def result_data(result: dict[str, Any]) -> bytes:
    """Canonical JSON of the six result fields (Error null when none)."""
    return canonical_json({key: result.get(key) for key in RESULT_KEYS})


def unsigned_result(slot: ScheduledSlot, result: dict[str, Any],
                    previous_result_id: str | None, attestation_id: str) -> UnsignedResult:
    """Build the Result item content for ``slot`` exactly as DESIGN §4 specifies.

    ``attestation_id`` is the standing attestation when the Result is signed (the intent keeps
    it, so a Result re-signed after a crash names the same one).
    """
    tags = [
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Result"),
        ("Process", slot.process_id), ("Message", slot.message_id), ("Nonce", str(slot.slot)),
        ("Assignment", slot.assignment_id), ("Hash-Chain", slot.hash_chain),
    ]
    if previous_result_id is not None:
        tags.append(("Previous-Result", previous_result_id))
    tags += [("Attestation", attestation_id), ("Content-Type", "application/json")]
    return UnsignedResult(slot.process_id, slot.slot, tuple(tags), result_data(result))


def unsigned_cron_result(process_id: str, tick: CronTick, result: dict[str, Any],
                         previous_result_id: str, attestation_id: str) -> UnsignedResult:
    """The Result item content of one cron message: named by its ``Cron``, ``Ordinate`` (the
    nonce it follows) and ``Timestamp``, chained after the result evaluated before it."""
    tags = (
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Result"),
        ("Process", process_id), ("Cron", tick.cron), ("Ordinate", str(tick.ordinate)),
        ("Timestamp", str(tick.timestamp_ms)), ("Block-Height", str(tick.block_height)),
        ("Previous-Result", previous_result_id), ("Attestation", attestation_id),
        ("Content-Type", "application/json"),
    )
    return UnsignedResult(process_id, tick.ordinate, tags, result_data(result))


def store_cron_result(conn: sqlite3.Connection, seq: int, tick: CronTick,
                      signed: items.Item) -> None:
    """Store a cron message's signed Result as the process's ``seq``-th cron result."""
    queries.insert_cron_result(conn, seq, tick.ordinate, tick.timestamp_ms, tick.cron, tick.rank,
                               tick.block_height, signed)


def intents_between(conn: sqlite3.Connection, process_id: str, first: int,
                    last: int) -> dict[int, UnsignedResult]:
    """The recorded intents of the slots ``first..last``, keyed by slot."""
    return {slot: UnsignedResult.decode(process_id, slot, blob)
            for slot, blob in queries.intent_blobs(conn, process_id, first, last).items()}


def record_intents(intents: Sequence[UnsignedResult]) -> Callable[[sqlite3.Connection], None]:
    """The write that durably records what is about to be signed (encoded here, before the
    writer's transaction)."""
    rows = [(i.process_id, i.slot, i.message_id, i.encode()) for i in intents]
    return lambda conn: queries.insert_intents(conn, rows)


def store_result(conn: sqlite3.Connection, slot: ScheduledSlot, signed: items.Item) -> None:
    """Store a signed Result item in place of its intent."""
    queries.insert_result(conn, slot, signed)


def stored_result(conn: sqlite3.Connection, process_id: str,
                  slot: int) -> tuple[str, bytes] | None:
    """The stored (result id, data) of one slot, if any."""
    return stored_results(conn, process_id, slot, slot).get(slot)


__all__ = ["UnsignedResult", "intents_between", "record_intents", "result_data",
           "store_cron_result", "store_result", "stored_result", "stored_results",
           "unsigned_cron_result", "unsigned_result"]
