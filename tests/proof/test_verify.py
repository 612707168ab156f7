"""``ao-appliance verify``: a node on loopback, several results, each proven online and from an
exported bundle (with and without replay), and a tampering suite that must fail at named steps."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.node.attest import make_attestation
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.proof.bundle import Proof
from appliance.proof.check import ProofReport, TrustInputs, check_proof
from appliance.proof.export import build_proof
from attestation.policy import Policy
from attestation.providers import EmulatedProvider
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.inproc import serve_in_thread
from tests.integration.server import Server
from tests.support.paths import REPO


def _trust() -> TrustInputs:
    """Trust inputs as of now (per call: the node's emulated certificates are newer than the
    module's import, and the suite may import this file long before it runs it)."""
    return TrustInputs(policy=Policy(any_measurement=True), now=datetime.now(UTC),
                       allow_emulated=True)


@pytest.fixture(scope="module")
def node_with_results(tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[Server, Node, str, list[str]]]:
    base = tmp_path_factory.mktemp("proof")
    with serve_in_thread(base / "node", EmulatedProvider(base / "tee")) as (srv, node):
        client = client_identity(base / "client")
        process = spawn(srv, client, upload_module(srv, client), "proved")
        sent = []
        for n, code in enumerate(["x = 41", "x = x + 1", "return x", "error('boom')"]):
            item = message(client, process, code, n)
            status, body = srv.post("/", item.raw)
            assert status == 202, body
            sent.append(item.id)
        for mid in sent:
            srv.get(f"/result/{mid}?process-id={process}")
        yield srv, node, process, sent


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "verify", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def test_every_result_verifies_online(node_with_results: tuple[Server, Node, str, list[str]]
                                      ) -> None:
    srv, _, process, sent = node_with_results
    for mid in sent:
        out = _cli("--node", srv.url, "--process", process, "--message", mid, "--allow-emulated")
        assert out.returncode == 0, out.stdout + out.stderr
        lines = out.stdout.splitlines()
        assert lines[0].startswith("EMULATED EVIDENCE"), "emulated must be said first"
        assert sum(line.startswith("✓") for line in lines) == 8
        assert "VERIFIED (emulated TEE)" in lines


def test_emulated_refused_without_the_flag(node_with_results: tuple[Server, Node, str, list[str]]
                                           ) -> None:
    srv, _, process, sent = node_with_results
    out = _cli("--node", srv.url, "--process", process, "--message", sent[0], "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert not report["verified"]
    assert report["steps"][-1]["step"] == 8 and "EMU-0" in report["steps"][-1]["detail"]
    assert "--allow-emulated" in report["steps"][-1]["detail"]
    assert "allow_emulated=True" not in out.stdout and "DESIGN" not in out.stdout
    assert report["policy"] == "none given: measurement NOT checked"


def test_node_without_scheme_and_the_unchecked_measurement_is_said(
        node_with_results: tuple[Server, Node, str, list[str]]) -> None:
    srv, _, process, sent = node_with_results
    out = _cli("--node", srv.url.removeprefix("http://"), "--process", process, "--message",
               sent[0], "--allow-emulated")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "policy: none given: measurement NOT checked" in out.stdout.splitlines()


def test_bundle_offline_with_replay(node_with_results: tuple[Server, Node, str, list[str]],
                                    tmp_path: Path) -> None:
    srv, _, process, sent = node_with_results
    bundle = tmp_path / "proof.json"
    fetched = _cli("--node", srv.url, "--process", process, "--message", sent[-1],
                   "--allow-emulated", "--replay", "--save-bundle", bundle, "--json")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    report = json.loads(fetched.stdout)
    assert len(report["steps"]) == 9 and report["steps"][-1]["ok"]
    assert "boom" in json.dumps(report["result"]["Error"])
    offline = _cli("--bundle", bundle, "--allow-emulated", "--replay")
    assert offline.returncode == 0, offline.stdout + offline.stderr


def test_usage_errors(node_with_results: tuple[Server, Node, str, list[str]],
                      tmp_path: Path) -> None:
    srv, _, process, sent = node_with_results
    assert _cli("--node", "http://127.0.0.1:9", "--process", process,
                "--message", sent[0]).returncode == 2
    assert _cli("--node", srv.url, "--process", process, "--message", "nope").returncode == 2
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    out = _cli("--bundle", junk)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def _failed_step(proof: Proof, trust: TrustInputs | None = None) -> tuple[int, str]:
    report: ProofReport = check_proof(proof, trust or _trust())
    assert not report.ok
    last = report.steps[-1]
    return last.number, last.detail


def _resigned(raw: bytes, signer: NodeIdentity, **changes: object) -> bytes:
    item = items.parse_unverified(raw)
    fields = {"tags": item.tags, "data": item.data, "target": item.target} | changes
    return items.sign(signer, **fields).raw  # type: ignore[arg-type]


def test_tampering_fails_at_the_right_step(node_with_results: tuple[Server, Node, str, list[str]],
                                           tmp_path: Path) -> None:
    _, node, process, sent = node_with_results
    proof = build_proof(node, process, sent[-1])
    assert check_proof(proof, _trust()).ok
    results, assignments = list(proof.results), list(proof.assignments)

    flipped = bytearray(results[2])
    flipped[-3] ^= 1
    tampered = replace(proof, results=(*results[:2], bytes(flipped), *results[3:]))
    assert _failed_step(tampered)[0] == 1

    dropped = replace(proof, results=(*results[:2], *results[3:]),
                      assignments=(*assignments[:2], *assignments[3:]))
    assert _failed_step(dropped)[0] == 4

    swapped = replace(proof, assignments=(assignments[0], assignments[2], assignments[1],
                                          *assignments[3:]))
    assert _failed_step(swapped)[0] == 4

    stranger = NodeIdentity.load_or_create(tmp_path / "stranger")
    resigned = replace(proof, results=(*results[:-1], _resigned(results[-1], stranger)))
    assert _failed_step(resigned)[0] == 2

    other = make_attestation(stranger, EmulatedProvider(tmp_path / "tee"),
                             hashlib.sha256(b"x").digest(), b"n")
    assert _failed_step(replace(proof, attestations=(other.raw,)))[0] in (2, 7)

    step, detail = _failed_step(proof, replace(_trust(), allow_emulated=False))
    assert step == 8 and "EMU-0" in detail

    excluding = replace(_trust(), policy=Policy(allowed_measurements=frozenset({b"\1" * 48})))
    step, detail = _failed_step(proof, excluding)
    assert step == 8 and "EMU-15" in detail

    wrong_message = replace(proof, message_id=sent[0])
    assert _failed_step(wrong_message)[0] == 3
