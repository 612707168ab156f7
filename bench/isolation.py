"""Section ``isolation``: how long a third process's message takes while two processes loop
until their wall-clock limit on a node with two workers, with process moves
(``node.move_after_seconds`` 0.5) and without (0: today's placement, processes never move).

Three "third" processes, spawned before the loops, each get one message at once while both
workers loop; each message's latency is from its ingest to its stored result. The anchor is
the same kind of message on the idle node.
Run alone: ``python -m bench.isolation [--loop-seconds S]``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.metrics import NodeMetrics
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from bench.common import process_tags
from tests.support.modules import LOOP_DATA, loop_node

THIRDS = 3


def _message(client: NodeIdentity, target: str, data: str, n: int) -> items.Item:
    return items.sign(client, target=target, data=data.encode(), anchor=f"{n:032d}".encode(),
                      tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Eval")])


def _latency(node: Node, client: NodeIdentity, pid: str, n: int) -> float:
    message = _message(client, pid, f"hello {n}", n)
    started = time.perf_counter()
    node.ingest(message.raw)
    result = node.result(pid, message.id)
    elapsed = time.perf_counter() - started
    assert result["Error"] is None, result
    return elapsed


def _latencies(node: Node, messages: list[items.Item]) -> list[float]:
    """Ingest ``messages`` at once; the seconds from each one's ingest to its stored result."""
    sent = []
    for message in messages:
        node.ingest(message.raw)
        sent.append(time.perf_counter())
    done: dict[int, float] = {}
    while len(done) < len(messages):
        for i, message in enumerate(messages):
            if i not in done and node.result_now(message.target, message.id)[1] is not None:
                done[i] = time.perf_counter() - sent[i]
        time.sleep(0.005)
    return [done[i] for i in range(len(messages))]


def _run_once(root: Path, move_after: float, loop_seconds: float) -> dict[str, Any]:
    metrics = NodeMetrics()
    node, client, module = loop_node(root, metrics, loop_seconds,
                                     move_after_seconds=move_after,
                                     result_wait_seconds=loop_seconds * 4)
    try:
        names = ["looper-a", "looper-b"] + [f"third-{i}" for i in range(THIRDS)]
        procs = [items.sign(client, anchor=name.encode().ljust(32, b"."),
                            tags=process_tags(module.id, node.identity.address, name))
                 for name in names]
        for proc in procs:
            node.ingest(proc.raw)
        for proc in procs:
            node.result(proc.id, proc.id)
        loopers, thirds = procs[:2], procs[2:]
        idle = _latency(node, client, thirds[0].id, 1)
        loops = [_message(client, p.id, LOOP_DATA, 2) for p in loopers]
        for message in loops:
            node.ingest(message.raw)
        deadline = time.monotonic() + loop_seconds
        while node.local().pool.held_workers() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        looping_at = time.perf_counter()
        during = _latencies(node, [_message(client, p.id, "hello", 3) for p in thirds])
        still_looping = all(node.result_now(p.id, m.id)[1] is None
                            for p, m in zip(loopers, loops, strict=True))
        for proc, message in zip(loopers, loops, strict=True):
            node.result(proc.id, message.id)
        loop_wall = time.perf_counter() - looping_at
        moves = metrics.registry.get_sample_value("ao_appliance_process_moves_total") or 0.0
        return {"idle_ms": idle * 1000, "min_ms": min(during) * 1000,
                "max_ms": max(during) * 1000, "moves": int(moves),
                "workers": node.local().pool.worker_count,
                "answered_while_looping": still_looping, "loop_wall_s": loop_wall}
    finally:
        node.close()


def run(quick: bool, _cache: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The section: loops of 10 s (3 s quick)."""
    return rows(3.0 if quick else 10.0, log)


def rows(loop_seconds: float, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Both rows (moves on, moves off), each with its ratio to the idle anchor."""
    out = []
    for label, move_after in (("moves", 0.5), ("no_moves", 0.0)):
        log(f"isolation: {label}, loops of {loop_seconds:g} s")
        with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
            row: dict[str, Any] = _run_once(Path(tmp), move_after, loop_seconds)
        row = {"mode": label, "loop_s": loop_seconds, **row}
        row["max/idle"] = row["max_ms"] / row["idle_ms"]
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the section alone and print its rows as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.isolation", description=__doc__)
    parser.add_argument("--loop-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    found = rows(args.loop_seconds, lambda text: print(
        f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True))
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
