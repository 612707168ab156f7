"""Section ``xpush``: cross-node push between two real ``serve`` processes peered on loopback,
against a push within one node, in the same run. A sender process on node A sends Pings (aos
``Send``) to a receiver on A itself (the anchor) and to one on peer B (the courier pushes each
over ``POST /``); latency is one Ping from the client's POST of the sending Eval until the
receiver's Result for it exists, throughput one Eval sending a burst until the last one's
Result exists."""

from __future__ import annotations

import base64
import json
import socket
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import rate
from tests.integration.clients import client_identity, message, process_item, upload_module
from tests.integration.server import Server, start_server

RECEIVER = 'Handlers.add("ping", "Ping", function(m) Got = (Got or 0) + 1 end)\nreturn "ok"'
DEADLINE_SECONDS = 300.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(port: int, peer: str) -> tuple[str, ...]:
    return ("-m", "appliance.cli", "serve", "--http", f"127.0.0.1:{port}", "--tee", "emulated",
            "--public-url", f"http://127.0.0.1:{port}", "--peer", peer,
            "--allow-emulated-peers", "--data-dir")


def _wait(what: str, check: Callable[[], bool], pause: float = 0.005) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(pause)


def _last_slot(srv: Server, process: str) -> int:
    with urllib.request.urlopen(f"{srv.url}/results/{process}?sort=DESC&limit=1",
                                timeout=60) as answer:
        edges = json.loads(answer.read())["edges"]
    if not edges:
        return -1
    cursor = edges[0]["cursor"]
    return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def _reached(srv: Server, process: str, slot: int) -> Callable[[], bool]:
    return lambda: _last_slot(srv, process) >= slot


def run(quick: bool, cache: Any, log: Any) -> list[dict[str, Any]]:
    """Rows: latency (median of rounds) and burst throughput, within A and from A to B."""
    rounds, burst = (3, 20) if quick else (10, 200)
    with tempfile.TemporaryDirectory(prefix="ao-bench-xpush-") as tmp:
        port_a, port_b = _free_port(), _free_port()
        url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
        a = start_server(Path(tmp) / "a", _command(port_a, url_b))
        b = start_server(Path(tmp) / "b", _command(port_b, url_a))
        try:
            _wait("the peers", lambda: all(
                any(p["reachable"] for p in srv.get_json("/")["peers"]) for srv in (a, b)),
                0.2)
            client = client_identity(Path(tmp) / "client")
            module = upload_module(a, client)
            upload_module(b, client)
            both = (("Authority", a.address), ("Authority", b.address))
            sender = process_item(a, client, module, "sender", both)
            here = process_item(a, client, module, "here", both)
            there = process_item(b, client, module, "there", both)
            for srv, item in ((a, sender), (a, here), (b, there)):
                srv.post("/", item.raw)
            n = 0

            def post(srv: Server, process: str, code: str) -> None:
                nonlocal n
                n += 1
                status, body = srv.post("/", message(client, process, code, n).raw)
                if status != 202:
                    raise RuntimeError(f"POST / answered {status}: {body}")

            for srv, item in ((a, here), (b, there)):
                post(srv, item.id, RECEIVER)
                _wait("the receiver's setup", _reached(srv, item.id, 1))
            targets = {"within_node": (a, here.id), "cross_node": (b, there.id)}
            slots = dict.fromkeys(targets, 1)
            latency: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(rounds + 1):  # the first round warms up
                for name, (srv, pid) in targets.items():
                    slots[name] += 1
                    started = time.perf_counter()
                    post(a, sender.id, f'Send({{Target = "{pid}", Action = "Ping"}})')
                    _wait("a ping", _reached(srv, pid, slots[name]))
                    latency[name].append(time.perf_counter() - started)
            throughput: dict[str, float] = {}
            for name, (srv, pid) in targets.items():
                slots[name] += burst
                sends = "\n".join(f'Send({{Target = "{pid}", Action = "Ping"}})'
                                  for _ in range(burst))
                started = time.perf_counter()
                post(a, sender.id, sends)
                _wait("a burst", _reached(srv, pid, slots[name]))
                throughput[name] = rate(burst, time.perf_counter() - started)
                log(f"xpush {name}: {throughput[name]:.0f} msgs/s")
        finally:
            a.stop()
            b.stop()
    medians = {name: statistics.median(values[1:]) * 1e3 for name, values in latency.items()}
    return [{"what": "latency_ms (one Ping, median)", "within_node": medians["within_node"],
             "cross_node": medians["cross_node"],
             "ratio_cross_vs_within": medians["cross_node"] / medians["within_node"]},
            {"what": f"burst msgs/s ({burst} Pings in one Eval)",
             "within_node": throughput["within_node"], "cross_node": throughput["cross_node"],
             "ratio_cross_vs_within": throughput["cross_node"] / throughput["within_node"]}]
