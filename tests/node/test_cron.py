"""Cron as the legacy CU derives it: the pure generator, and a real aos process that ticks."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.errors import BadRequest
from appliance.node.cron import Boundary, cron_message, parse_crons, ticks_between
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.observer import NodeObserver
from appliance.proof.bundle import Proof
from appliance.proof.check import TrustInputs, check_proof
from appliance.proof.export import build_proof
from appliance.proof.replay import replay_proof
from attestation.policy import Policy
from tests.node.test_node_core import _eval, _module, _node

T0 = 1_700_000_000_250  # a process's slot-0 timestamp (ms), 250 ms into its second


def _crons(*tags: tuple[str, str]) -> tuple:  # type: ignore[type-arg]
    return parse_crons(list(tags))


def test_parse_crons_names_and_orders_as_the_cu() -> None:
    crons = _crons(("Cron-Interval", "1-minute"), ("Cron-Tag-Action", "Slow"),
                   ("Cron-Interval", "10-blocks"), ("Cron-Interval", "5-seconds"),
                   ("Cron-Tag-Action", "Fast"), ("Cron-Tag-From", "x"))
    # block crons first (tag order), then time crons sorted by interval, indexed per group
    assert [(c.name, c.unit, c.value) for c in crons] == [
        ("0-10-blocks", "blocks", 10), ("0-5-seconds", "seconds", 5),
        ("1-1-minute", "seconds", 60)]
    assert crons[1].tags == (("Action", "Fast"), ("From", "x"))
    for bad in ([("Cron-Tag-Action", "x")], [("Cron-Interval", "0-seconds")],
                [("Cron-Interval", "soon")], [("Cron-Interval", "5-fortnights")]):
        with pytest.raises(BadRequest):
            parse_crons(bad)


def test_ticks_keep_the_left_boundarys_millisecond_and_skip_the_origin_second() -> None:
    crons = _crons(("Cron-Interval", "5-seconds"), ("Cron-Tag-Action", "Cron"))
    origin = Boundary(T0, 7, 0)
    ticks = ticks_between(crons, origin, origin, T0 + 12_000)
    assert [(t.timestamp_ms, t.ordinate, t.cron) for t in ticks] == [
        (T0 + 5000, 0, "0-5-seconds"), (T0 + 10_000, 0, "0-5-seconds")]
    # the next segment starts at the next message (ms 900): its ticks carry that millisecond
    left = Boundary(T0 + 12_650, 7, 1)
    assert [t.timestamp_ms for t in ticks_between(crons, origin, left, T0 + 21_000)] == [
        T0 + 15_650, T0 + 20_650]
    # a resumed walk skips what was already evaluated
    after = ticks_between(crons, origin, left, T0 + 21_000)[0].position
    assert [t.timestamp_ms for t in ticks_between(crons, origin, left, T0 + 21_000,
                                                  after=after)] == [T0 + 20_650]
    assert cron_message(ticks[0], "P", "O") == {
        "Owner": "O", "Target": "P", "From": "O", "Tags": [{"name": "Action", "value": "Cron"}],
        "Timestamp": T0 + 5000, "Block-Height": 7, "Cron": True}


def test_blocks_between_messages_fire_block_crons_first() -> None:
    crons = _crons(("Cron-Interval", "2-blocks"), ("Cron-Interval", "1-second"))
    origin = Boundary(T0, 10, 0)
    blocks = [(11, T0 - 250 + 1000), (12, T0 - 250 + 2000)]
    ticks = ticks_between(crons, origin, origin, T0 + 3000, blocks=blocks)
    assert [(t.cron, t.timestamp_ms, t.block_height) for t in ticks] == [
        ("0-1-second", T0 + 1000, 11), ("0-2-blocks", T0 - 250 + 2000, 12),
        ("0-1-second", T0 + 2000, 12)]


class _Counting(NodeObserver):
    def __init__(self) -> None:
        self.divergences = 0

    def divergence(self) -> None:
        self.divergences += 1


CRON_HANDLER = (
    'Handlers.add("cron", Handlers.utils.hasMatchingTag("Action", "Cron"), function(msg) '
    'ticks = (ticks or 0) + 1; print("tick " .. ticks); '
    'Send({Target = Peer, Action = "Tick", Data = tostring(ticks)}) end); return "armed"')


def _cron_process(client: NodeIdentity, module: str, node: Node, name: str,
                  interval: str = "1-second") -> items.Item:
    return items.sign(client, anchor=name.encode().ljust(32, b"."), tags=[
        ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module),
        ("Scheduler", node.identity.address), ("Authority", node.identity.address),
        ("Name", name), ("Cron-Interval", interval), ("Cron-Tag-Action", "Cron")])


def _wait_for_crons(node: Node, pid: str, count: int) -> list[tuple[dict, dict]]:  # type: ignore[type-arg]
    deadline = time.monotonic() + 120  # hang guard only
    while True:
        node.tick_crons(pid)
        rows, _ = node.cron_page(pid, after=None, since_ms=None, upto=None, limit=1000)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def _expected_ticks(node: Node, pid: str) -> list[tuple[int, int, str]]:
    """Every cron message the schedule implies, by the pure generator (up to the last one)."""
    process = items.parse_unverified(node.item_raw(pid))
    crons = parse_crons(process.tags)
    slots = node.home.store.all("SELECT slot, timestamp_ms, block_height FROM schedule WHERE "
                           "process_id = ? ORDER BY slot", pid)
    bounds = [Boundary(int(ts), int(h), int(s)) for s, ts, h in slots]
    last = node.home.store.one("SELECT MAX(timestamp_ms) FROM cron_results WHERE "
                               "process_id = ?", pid)
    out = []
    for i, left in enumerate(bounds):
        right = bounds[i + 1].timestamp_ms if i + 1 < len(bounds) else int(last[0]) + 1
        out += [(t.ordinate, t.timestamp_ms, t.cron) for t in ticks_between(
            crons, bounds[0], left, right, blocks=node.blocks(), limit=10**6)]
    return out


def test_aos_cron_ticks_pushes_its_outbox_and_replays_identically(tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    data = tmp_path / "node"
    observer = _Counting()
    node = Node(**{**_node_args(data), "observer": observer})
    try:
        module = _module(client)
        node.ingest(module.raw)
        peer = _cron_process(client, module.id, node, "peer", "1-year")
        node.ingest(peer.raw)
        proc = _cron_process(client, module.id, node, "ticker")
        node.ingest(proc.raw)
        arm = _eval(client, proc.id, f'Peer = "{peer.id}"; ' + CRON_HANDLER, 1)
        node.ingest(arm.raw)
        assert "armed" in json.dumps(node.result(proc.id, arm.id))
        rows = _wait_for_crons(node, proc.id, 3)
        assert len(rows) >= 3
        assert "tick 1" in json.dumps(rows[0][1]["Output"])
        assert rows[0][1]["Messages"][0]["Target"] == peer.id
        # the cron outbox was pushed: the peer's schedule holds the ticks, From-Process = ticker
        pushed = node.home.store.all("SELECT message_id FROM schedule WHERE process_id = ? AND "
                                "slot > 0", peer.id)
        assert len(pushed) >= 3
        first = items.parse_unverified(node.item_raw(str(pushed[0][0])))
        assert items.first_tag(first, "From-Process") == proc.id
        assert items.first_tag(first, "Action") == "Tick"
        # a message after the ticks: its result comes after every cron before it
        later = _eval(client, proc.id, "return ticks", 2)
        node.ingest(later.raw)
        result = node.result(proc.id, later.id)
        before = node.home.store.all("SELECT timestamp_ms FROM cron_results WHERE "
                                "process_id = ? AND after_slot < 2", proc.id)
        assert str(len(before)) in json.dumps(result["Output"])
        assert [tuple(r) for r in node.home.store.all(
            "SELECT after_slot, timestamp_ms, cron FROM cron_results WHERE process_id = ? "
            "ORDER BY seq", proc.id)] == _expected_ticks(node, proc.id)
        # verify: the chain (slots and crons) walks without gap, replay reproduces it
        proof = Proof.decode(build_proof(node, proc.id, later.id, replay=True).encode())
        assert proof.crons
        report = check_proof(proof, _trust(), replay=lambda p: replay_proof(
            p, tmp_path / "cache", node.settings.limits))
        assert report.ok, [s for s in report.steps if not s.ok]
        assert "cron" in report.steps[-1].detail
        stored = node.home.store.all("SELECT seq, result_id FROM cron_results WHERE process_id = ?",
                                proc.id)
        cron_id = str(stored[0][1])  # held in its cron_results row, found by id as any item
        [(_, cron_raw)] = node.find_items(ids=[cron_id], limit=2)
        assert items.parse_unverified(node.item_raw(cron_id)).id == cron_id
        assert cron_raw == node.item_raw(cron_id)
    finally:
        node.close()
    # replay from slot 0 (no checkpoint) and from a checkpoint re-derive the same cron results
    for keep in ("none", "older"):
        copy = tmp_path / f"replay-{keep}"
        shutil.copytree(data, copy)
        drop = ("DELETE FROM checkpoints WHERE process_id = ?" if keep == "none" else
                "DELETE FROM checkpoints WHERE process_id = ?1 AND slot = (SELECT MAX(slot) "
                "FROM checkpoints WHERE process_id = ?1)")
        with sqlite3.connect(copy / "node.sqlite3") as conn:
            conn.execute(drop, (proc.id,))
        again = Node(**{**_node_args(copy), "observer": observer})
        try:
            once = _eval(client, proc.id, "return ticks", 3)
            again.ingest(once.raw)
            again.result(proc.id, once.id)
            assert again.home.store.all("SELECT seq, result_id FROM cron_results WHERE "
                                   "process_id = ? AND seq < ?", proc.id, len(stored)) == stored
        finally:
            again.close()
    assert observer.divergences == 0


def _node_args(data: Path) -> dict:  # type: ignore[type-arg]
    node = _node(data, cron_tick_seconds=0, checkpoint_every_messages=1)
    args = {"settings": node.settings, "identity": node.identity, "provider": node.provider,
            "config_digest": node.config_digest}
    node.close()
    return args


def _trust() -> TrustInputs:
    return TrustInputs(policy=Policy(any_measurement=True), now=datetime.now(UTC),
                       allow_emulated=True)


def test_a_cron_handler_messaging_its_own_process_is_bounded_but_keeps_ticking(
        tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    node = _node(tmp_path / "node", cron_tick_seconds=0, max_push_depth=4)
    try:
        module = _module(client)
        node.ingest(module.raw)
        proc = _cron_process(client, module.id, node, "self")
        node.ingest(proc.raw)
        arm = _eval(client, proc.id, f'Peer = ao.id; {CRON_HANDLER}', 1)
        node.ingest(arm.raw)
        node.result(proc.id, arm.id)
        deadline = time.monotonic() + 120  # hang guard only
        seconds: set[int] = set()
        while len(seconds) < 3 and time.monotonic() < deadline:
            node.tick_crons(proc.id)
            seconds = {int(ts) // 1000 for (ts,) in node.home.store.all(
                "SELECT timestamp_ms FROM schedule WHERE process_id = ? AND push_depth > 0",
                proc.id)}
            time.sleep(0.3)
        # the Tocks of several seconds got through; none deeper than the bound
        assert len(seconds) >= 3
        deepest = node.home.store.one("SELECT MAX(push_depth) FROM schedule WHERE process_id = ?",
                                 proc.id)
        assert deepest is not None and int(deepest[0]) <= 4
    finally:
        node.close()
