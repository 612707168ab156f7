"""Crash torture: kill -9 a real ``ao-appliance serve`` at random moments while concurrent clients
stream messages to several processes (checkpoints on), restart it, and check DESIGN §5
invariants 1-4 over everything that was acknowledged. Used by tests/integration/test_crash.py
(a bounded run) and by ``python -m bench.crash --kills N``."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.node.chain import first_hash_chain, next_hash_chain
from appliance.node.identity import NodeIdentity
from tests.integration.clients import (
    client_identity,
    message,
    spawn,
    spread_names,
    upload_module,
)
from tests.integration.server import SERVE, Server, start_server
from tests.integration.test_aoconnect import verify_result_chain, whole_schedule

CODE = "counter = (counter or 0) + 1; return counter"


@dataclass
class TortureReport:
    """What a run did and every invariant violation it found (empty when all held)."""

    kills: int = 0
    acknowledged: int = 0
    slots: int = 0
    results_sampled: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    processes: list[str] = field(default_factory=list)


@dataclass
class _Client:
    process: str
    identity: NodeIdentity
    base: int
    acked: list[str] = field(default_factory=list)

    def stream(self, server: Server, stop: threading.Event, round_no: int) -> None:
        n = 0
        while not stop.is_set():
            item = message(self.identity, self.process, CODE, self.base + round_no * 100_000 + n)
            n += 1
            try:
                status, _ = server.post("/", item.raw)
            except OSError:
                return
            if status == 202:
                self.acked.append(item.id)
            else:  # its shard is restarting (503): nothing was stored
                time.sleep(0.05)


def torture(base: Path, kills: int, *, processes: int = 3, clients_per_process: int = 2,
            checkpoint_every: int = 5, seed: int = 1234, shards: int = 1,
            log: Callable[[str], None] = lambda _: None,
            then: Callable[[Server, TortureReport], None] | None = None,
            max_seconds: float | None = None) -> TortureReport:
    """Run ``kills`` kill -9 / restart rounds (fewer if ``max_seconds`` runs out first) and
    check the node's state afterwards (``then`` runs on the last, still running server).

    With ``shards`` > 1 the node runs that many shard processes, the processes are spread
    over all of them, and every other round kills one shard process (the front restarts it)
    instead of the whole node."""
    started = time.monotonic()
    rng = random.Random(seed)
    report = TortureReport()
    config = base / "config.yaml"
    # one evaluation worker: a restart spawns one process fewer (start-up is most of a round)
    config.write_text(f"node:\n  checkpoint_every_messages: {checkpoint_every}\n  workers: 1\n"
                      f"  shards: {shards}\n")
    command = (*SERVE[:-1], "--config", str(config), SERVE[-1])
    data = base / "node"
    server = start_server(data, command)
    identity = client_identity(base / "client")
    module = upload_module(server, identity)
    report.processes = [spawn(server, identity, module, name)
                        for name in spread_names(server, identity, module, processes, "torture",
                                                 shards)]
    clients = [_Client(pid, identity, (p * 10 + c) * 10**8)  # the owner: aos evaluates its Eval
               for p, pid in enumerate(report.processes) for c in range(clients_per_process)]
    seen: dict[tuple[str, str], bytes] = {}
    try:
        for round_no in range(kills):
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                log(f"crash torture: time budget spent after {report.kills} kills")
                break
            stop = threading.Event()
            threads = [threading.Thread(target=c.stream, args=(server, stop, round_no))
                       for c in clients]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.05, 1.0))
            for client in rng.sample(clients, 2):  # a few results, to check they never change
                for mid in client.acked[-8:-4]:
                    url = f"{server.url}/result-item/{mid}?process-id={client.process}"
                    # not evaluated yet: the read would wait result_wait_seconds, so time out
                    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                        seen[(client.process, mid)] = bytes(r.read())
            shard_round = shards > 1 and round_no % 2 == 1
            if shard_round:
                victim = rng.choice(server.shard_pids())
                os.kill(victim, signal.SIGKILL)
            else:
                server.kill()
            stop.set()
            for thread in threads:
                thread.join()
            report.kills += 1
            if report.kills % 10 == 0:
                log(f"crash torture: {report.kills}/{kills} kills, "
                    f"{sum(len(c.acked) for c in clients)} acknowledged")
            if shard_round:
                _wait_restarted(server, victim, shards)
            else:
                server = start_server(data, command)
        report.acknowledged = sum(len(c.acked) for c in clients)
        report.results_sampled = len(seen)
        _check(server, clients, seen, report)
        if then is not None:
            then(server, report)
    finally:
        server.stop()
    report.seconds = time.monotonic() - started
    return report


def _wait_restarted(server: Server, victim: int, shards: int) -> None:
    """Until the front has restarted the killed shard and the node is healthy again."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pids = server.shard_pids()
        if len(pids) == shards and victim not in pids:
            with contextlib.suppress(OSError):
                server.get("/")
                return
        time.sleep(0.1)
    raise AssertionError("the killed shard was not restarted")


def _wait_result(server: Server, process: str, mid: str) -> None:
    """Until the last slot has its result (each read waits ``result_wait_seconds`` at most)."""
    deadline = time.monotonic() + 1800  # a hang guard for long runs
    while True:
        try:
            server.get(f"/result/{mid}?process-id={process}")
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                raise


def _check(server: Server, clients: list[_Client], seen: dict[tuple[str, str], bytes],
           report: TortureReport) -> None:
    for process in report.processes:
        edges = whole_schedule(server, process)
        report.slots += len(edges)
        scheduled = [e["node"]["message"]["id"] for e in edges]
        slot_of = {mid: slot for slot, mid in enumerate(scheduled)}
        if len(slot_of) != len(scheduled):
            report.violations.append(f"{process}: a message holds two slots")
        for client in (c for c in clients if c.process == process):
            lost = [mid for mid in client.acked if mid not in slot_of]
            if lost:
                report.violations.append(f"{process}: {len(lost)} acknowledged messages lost")
            slots = [slot_of[mid] for mid in client.acked if mid in slot_of]
            if slots != sorted(slots):
                report.violations.append(f"{process}: a client's messages are out of order")
        hash_chain, previous = first_hash_chain(process), None
        for slot, edge in enumerate(edges):
            tags = {t["name"]: t["value"] for t in edge["node"]["assignment"]["tags"]}
            if previous is not None:
                hash_chain = next_hash_chain(previous, hash_chain)
            if tags["Nonce"] != str(slot) or tags["Hash-Chain"] != hash_chain:
                report.violations.append(f"{process}: slot {slot} breaks the chain")
                break
            previous = edge["node"]["assignment"]["id"]
        _wait_result(server, process, scheduled[-1])
        try:
            verify_result_chain(server, process)
        except AssertionError as exc:
            report.violations.append(f"{process}: result chain: {exc}")
    for (process, mid), raw in seen.items():
        if server.get(f"/result-item/{mid}?process-id={process}") != raw:
            report.violations.append(f"{process}: the result of {mid} changed across restarts")
