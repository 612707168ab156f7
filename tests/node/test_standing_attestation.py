"""Results name fresh evidence: each Result's Attestation tag is the standing attestation current
when it was signed, that attestation's evidence was valid then, and ``verify`` checks exactly
that (at the Results' times, not at ``--now``)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.proof import check
from appliance.proof.check import TrustInputs, check_proof
from appliance.proof.export import build_proof
from attestation.bundle import decode_evidence
from attestation.policy import Policy
from attestation.verify import verify_evidence
from tests.node.test_node_core import _eval, _hosting_one

ANY = Policy(any_measurement=True)


def _attestation_of(node: object, process: str, message: str) -> str:
    raw = node.result_item(process, message)  # type: ignore[attr-defined]
    return items.first_tag(items.parse_unverified(raw), "Attestation") or ""


def test_results_after_a_refresh_name_the_new_attestation(tmp_path: Path) -> None:
    client, _, node, proc = _hosting_one(tmp_path)
    try:
        first = _eval(client, proc.id, "return 1", 1)
        node.ingest(first.raw)
        old = node.attestation_id
        assert _attestation_of(node, proc.id, first.id) == old
        refreshed = node.refresh_attestation()
        assert refreshed.id == node.attestation_id != old and refreshed.ok
        assert refreshed.step == "EMU-16" and refreshed.facts is not None
        second = _eval(client, proc.id, "return 2", 2)
        node.ingest(second.raw)
        assert _attestation_of(node, proc.id, second.id) == refreshed.id
        assert _attestation_of(node, proc.id, first.id) == old  # signed results never change
        for message in (first, second):
            attestation = items.parse_unverified(node.item_raw(_attestation_of(node, proc.id,
                                                                            message.id)))
            assert items.first_tag(attestation, "Type") == "Attestation"
            evidence = decode_evidence(attestation.data)
            verify_evidence(evidence, ANY, datetime.now(UTC), allow_emulated=True)
        proof = build_proof(node, proc.id, second.id)
        assert len(proof.attestations) == 2
        report = check_proof(proof, TrustInputs(ANY, datetime.now(UTC), allow_emulated=True))
        assert report.ok, [s.detail for s in report.steps]
        assert "times of the Results" in report.steps[-1].detail
    finally:
        node.close()


def test_verify_checks_the_evidence_at_the_results_time_not_at_now(tmp_path: Path) -> None:
    client, _, node, proc = _hosting_one(tmp_path)
    try:
        message = _eval(client, proc.id, "return 3", 1)
        node.ingest(message.raw)
        proof = build_proof(node, proc.id, message.id)
    finally:
        node.close()
    # The emulated chain is valid from five minutes before the node made it for ten years: a
    # --now far outside that window does not matter, the Results' times do.
    far = datetime.now(UTC) + timedelta(days=20 * 365)
    assert check_proof(proof, TrustInputs(ANY, far, allow_emulated=True)).ok
    # Results stamped before the evidence existed: the evidence step refuses them.
    parsed, _ = check._parse_all(proof)
    check._same_signer(parsed)
    parsed.assignments = [dataclasses.replace(a, tags=[
        (n, "1000000000000" if n == "Timestamp" else v) for n, v in a.tags])
        for a in parsed.assignments]
    with pytest.raises(check.CheckFailed, match="2001-09-09T01:46:40"):
        check._evidence(parsed, TrustInputs(ANY, datetime.now(UTC), allow_emulated=True),
                        check.ProofReport(proc.id, message.id))
