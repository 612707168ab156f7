"""kill -9 of a real ``ao-appliance serve`` at random points while a client streams messages
(DESIGN §5 invariants 1-4); the final chain is proven with ``verify --replay``."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from appliance.compute import ComputeLimits
from appliance.node.chain import first_hash_chain, next_hash_chain
from appliance.proof.check import TrustInputs, check_proof
from appliance.proof.fetch import fetch_proof
from appliance.proof.replay import replay_proof
from attestation.policy import Policy
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import Server, start_server
from tests.integration.test_aoconnect import verify_result_chain, whole_schedule

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
    server = start_server(data)
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
            server = start_server(data)
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

        last = edges[-1]["node"]["message"]["id"]
        proof = fetch_proof(server.url, process, last, replay=True)
        trust = TrustInputs(Policy(any_measurement=True), datetime.now(UTC), allow_emulated=True)
        report = check_proof(proof, trust,
                             lambda p: replay_proof(p, tmp_path / "cache", ComputeLimits()))
        assert report.ok, report.steps[-1]
        assert len(proof.attestations) >= ROUNDS, "each start made its own standing attestation"
        assert len(chain) == len(proof.results)
    finally:
        server.stop()

