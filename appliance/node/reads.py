"""Operator reads of one shard's store (results with their items, process listing, checkpoint
digests) as typed rows; :class:`~appliance.node.shard.Shard` serves them and the
:class:`~appliance.node.node.Node` façade routes or fans them out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import NotFound
from appliance.node.evaluator import CheckpointFile, checkpoint_sha256
from appliance.node.store import Store


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


_RESULTS = ("SELECT r.process_id, r.slot, r.message_id, r.result_id, r.data, i.raw "
            "FROM results r JOIN items i ON i.id = r.result_id ")


def _result(row: tuple[Any, ...]) -> ResultRow:
    pid, slot, mid, rid, data, raw = row
    return ResultRow(str(pid), int(slot), str(mid), str(rid), bytes(data), bytes(raw))


def require_process(store: Store, process_id: str) -> None:
    """Raise NotFound unless ``process_id`` is hosted here."""
    if store.one("SELECT 1 FROM processes WHERE id = ?", process_id) is None:
        raise NotFound(f"process {process_id} is not hosted on this node")


def result_of(store: Store, process_id: str, message_id: str) -> ResultRow:
    """The stored result of ``message_id`` (call after ``result`` has waited for it)."""
    row = store.one(_RESULTS + "WHERE r.process_id = ? AND r.message_id = ?",
                    process_id, message_id)
    if row is None:
        raise NotFound(f"no result item for {message_id}")
    return _result(row)


def results_from(store: Store, process_id: str, from_slot: int, limit: int) -> list[ResultRow]:
    """Up to ``limit`` stored results of a process with slot ≥ ``from_slot``, by slot."""
    rows = store.all(_RESULTS + "WHERE r.process_id = ? AND r.slot >= ? ORDER BY r.slot LIMIT ?",
                     process_id, from_slot, limit)
    return [_result(row) for row in rows]


def process_page(store: Store, after: int, limit: int) -> list[ProcessRow]:
    """Hosted processes in creation order, after cursor ``after`` (0 for the first page)."""
    rows = store.all(
        "SELECT p.rowid, p.id, p.module_id, p.owner, p.created_ms, "
        "(SELECT coalesce(max(s.slot) + 1, 0) FROM schedule s WHERE s.process_id = p.id), "
        "(SELECT coalesce(max(r.slot) + 1, 0) FROM results r WHERE r.process_id = p.id), "
        "(SELECT max(c.slot) FROM checkpoints c WHERE c.process_id = p.id) "
        "FROM processes p WHERE p.rowid > ? ORDER BY p.rowid LIMIT ?", after, limit)
    return [ProcessRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]),
                       int(r[6]), None if r[7] is None else int(r[7])) for r in rows]


def item_created_ms(store: Store, item_id: str) -> int | None:
    """When the node stored an item (ms since the epoch), None when it holds no such item."""
    row = store.one("SELECT created_ms FROM items WHERE id = ?", item_id)
    return None if row is None else int(row[0])


def outbox_by_status(store: Store) -> dict[str, int]:
    """Outbox entry counts keyed by status."""
    rows = store.all("SELECT status, count(*) FROM outbox GROUP BY status")
    return {str(status): int(count) for status, count in rows}


def checkpoint_at(store: Store, process_id: str, slot: int) -> tuple[str, int]:
    """(memory SHA-256 hex, memory size) of the checkpoint taken at ``slot``; the SHA-256 is
    computed from the file and recorded the first time it is asked for."""
    row = store.one("SELECT file, sha256, raw_size, clock FROM checkpoints "
                    "WHERE process_id = ? AND slot = ?", process_id, slot)
    if row is None:
        raise NotFound(f"no checkpoint of {process_id} at slot {slot}")
    ref = CheckpointFile(Path(row[0]), str(row[1]), int(row[2]), int(row[3]))
    sha256 = checkpoint_sha256(ref)
    if not ref.sha256:
        store.write(lambda conn: conn.execute(
            "UPDATE checkpoints SET sha256 = ? WHERE process_id = ? AND slot = ?",
            (sha256, process_id, slot)))
    return sha256, ref.raw_size
