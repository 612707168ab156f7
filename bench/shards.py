"""Section ``shards``: the echo pipeline over 8 processes with the node in one process (the
anchor) and with 2 shard processes behind the front (``serve --shards 2``), interleaved in one
run; msgs/s, their ratio, and CPU per message of the front (this process: 8 client threads
calling ``Node.ingest`` and routing) and of the shard processes (their evaluation workers not
included), and how many of the machine's cores were busy meanwhile (anyone's work)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import wasmtime

from appliance.node.remote_shard import RemoteShard
from bench.ceiling import ECHO, FORMAT
from bench.common import BusyCores, pipeline, rate
from bench.http_pipeline import cpu_seconds

PROCESSES = 8
CLIENTS = 8


def _round(wasm: bytes, shards: int, count: int) -> dict[str, float]:
    with pipeline(wasm, FORMAT, workers=2, shards=shards) as pipe:
        pids = pipe.spawn_spread(PROCESSES)
        per = count // PROCESSES
        batches = {pid: [pipe.item(pid, {"Action": "Echo"}, "x") for _ in range(per)]
                   for pid in pids}
        shard_pids = [s.pid for s in pipe.node.shards if isinstance(s, RemoteShard)]
        front = time.process_time()
        before = [cpu_seconds(p)[0] for p in shard_pids]
        with BusyCores() as busy:
            seconds = pipe.send_all(batches, clients=CLIENTS)
        front = time.process_time() - front
        shard_cpu = sum(cpu_seconds(p)[0] for p in shard_pids) - sum(before)
    sent = per * PROCESSES
    return {"msgs_per_s": rate(sent, seconds), "front_cpu_ms_per_msg": front * 1e3 / sent,
            "shard_cpu_ms_per_msg": shard_cpu * 1e3 / sent, "machine_busy_cores": busy.cores}


def run(quick: bool, cache: Any, log: Any) -> dict[str, Any]:
    """One shard in-process vs two shard processes, A B A B."""
    count = 800 if quick else 4000
    rounds = 1 if quick else 3
    wasm = bytes(wasmtime.wat2wasm(ECHO.read_text()))
    one: list[dict[str, float]] = []
    two: list[dict[str, float]] = []
    for k in range(rounds):
        log(f"shards: round {k + 1}/{rounds}, 1 shard then 2 shard processes ({count} msgs)")
        one.append(_round(wasm, 1, count))
        two.append(_round(wasm, 2, count))
    ratios = [b["msgs_per_s"] / a["msgs_per_s"] for a, b in zip(one, two, strict=True)]
    return {"one_shard": one, "two_shards": two, "two/one": ratios,
            "two/one_median": statistics.median(ratios),
            "target": "two/one >= 1.8 on 2 cores; front CPU <= 0.35 ms per message"}
