"""Result intents (DESIGN §5, invariant 3): what is recorded before signing is what gets signed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.node.db import queries
from appliance.node.db.schema import DB_FILE
from appliance.node.results import UnsignedResult
from tests.node.test_node_core import _eval, _hosting_one, _node

TAGS = (("Type", "Result"), ("Process", "P" * 43), ("Nonce", "7"), ("Ünïcode", "✓ value"))


@pytest.mark.parametrize("data", [b'{"Output":"x"}', b"", "é".encode() * 5000])
def test_intent_encoding_round_trips(data: bytes) -> None:
    intent = UnsignedResult("P" * 43, 7, TAGS, data)
    assert UnsignedResult.decode("P" * 43, 7, intent.encode()) == intent


def test_intents_written_by_earlier_versions_still_decode() -> None:
    old = json.dumps({"data": '{"Output":"x"}', "tags": [list(t) for t in TAGS]},
                     separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    assert UnsignedResult.decode("P" * 43, 7, old) == UnsignedResult(
        "P" * 43, 7, TAGS, b'{"Output":"x"}')


def test_a_recorded_intent_is_signed_instead_of_a_different_recomputation(
        tmp_path: Path) -> None:
    client, data, node, proc = _hosting_one(tmp_path)
    msg = _eval(client, proc.id, "return 6 * 7", 1)
    slot = node.ingest(msg.raw).slot
    original = items.parse_unverified(node.result_item(proc.id, msg.id))
    node.close()
    # As if the node died after committing the intent and before storing the signed Result,
    # and the recorded content differs from what evaluating the slot again gives.
    recorded = UnsignedResult(proc.id, slot, tuple(original.tags),
                              original.data.replace(b"42", b"43"))
    conn = sqlite3.connect(data / DB_FILE, isolation_level=None)
    conn.execute("UPDATE results SET result_id = NULL, data = x'', raw = NULL, unsigned = ? "
                 "WHERE process_id = ? AND slot = ?", (recorded.encode(), proc.id, slot))
    conn.close()
    node = _node(data)
    try:
        signed = items.parse_verified(node.result_item(proc.id, msg.id), 1 << 24)
        assert signed.data == recorded.data, "the intent, not the recomputation, is signed"
        assert signed.id != original.id
        assert node.home.store.one("SELECT count(*) FROM results WHERE unsigned IS NOT NULL "
                                   "OR result_id IS NULL")[0] == 0
        assert node.item_raw(signed.id) == signed.raw
        assert node.home.store.one("SELECT count(*) FROM items WHERE id = ?", signed.id)[0] == 0
    finally:
        node.close()


def test_an_intent_row_is_not_a_result(tmp_path: Path) -> None:
    client, data, node, proc = _hosting_one(tmp_path)
    try:
        msg = _eval(client, proc.id, "return 6 * 7", 1)
        slot = node.ingest(msg.raw).slot
        node.result(proc.id, msg.id)
    finally:
        node.close()
    conn = sqlite3.connect(data / DB_FILE, isolation_level=None)
    conn.execute("UPDATE results SET result_id = NULL, data = x'', raw = NULL, unsigned = x'01' "
                 "WHERE process_id = ? AND slot = ?", (proc.id, slot))
    try:
        assert queries.intent_blobs(conn, proc.id, slot, slot) == {slot: b"\x01"}
        assert slot not in queries.stored_results(conn, proc.id, 0, slot)
        assert queries.result_of(conn, proc.id, msg.id) is None
        assert [s for s, _ in queries.result_items(conn, proc.id, 0, slot)] == [0]
        assert [s for s, _ in queries.results_page(conn, proc.id, -1, 99, False, 9)] == [0]
        assert queries.processes_behind(conn) == [proc.id]
        assert queries.counts(conn)[1] == 1
    finally:
        conn.close()
