"""kill -9 of a real ``ao-appliance serve`` (and of its shard processes) at random moments while
concurrent clients stream messages to 3 processes with checkpoints on (DESIGN §5 invariants
1-4): every acknowledged message holds its slot, slots are contiguous, the hash chain runs from
slot 0, one Result per slot that never changes across restarts; the final chain of one process
is proven with ``verify --replay``. ``python -m bench.crash --kills N`` runs the same torture for
longer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from appliance.compute import ComputeLimits
from appliance.proof.check import TrustInputs, check_proof
from appliance.proof.fetch import fetch_proof
from appliance.proof.replay import replay_proof
from attestation.policy import Policy
from tests.integration.server import Server
from tests.integration.test_aoconnect import whole_schedule
from tests.integration.torture import TortureReport, torture

KILLS = 20


def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    def prove(server: Server, report: TortureReport) -> None:
        process = report.processes[0]
        last = whole_schedule(server, process)[-1]["node"]["message"]["id"]
        proof = fetch_proof(server.url, process, last, replay=True)
        trust = TrustInputs(Policy(any_measurement=True), datetime.now(UTC), allow_emulated=True)
        checked = check_proof(proof, trust,
                              lambda p: replay_proof(p, tmp_path / "cache", ComputeLimits()))
        assert checked.ok, checked.steps[-1]
        # the bundle holds the attestations its Results name (the standing one of the start that
        # signed each): how many depends on which starts this process's messages fell in
        assert proof.attestations, "the Results name the standing attestations that signed them"

    report = torture(tmp_path, KILLS, then=prove)
    assert report.kills == KILLS
    assert report.acknowledged > 0, "the clients got no acknowledgement at all"
    assert report.results_sampled > 0, "no result was sampled before a kill"
    assert report.violations == []


def test_acknowledged_messages_survive_kill_9_of_shards_and_front(tmp_path: Path) -> None:
    report = torture(tmp_path, KILLS // 2, shards=2, seed=99)
    assert report.kills == KILLS // 2
    assert report.acknowledged > 0, "the clients got no acknowledgement at all"
    assert report.violations == []
