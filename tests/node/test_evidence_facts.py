"""Evidence facts (TCB, earliest expiry) of the real vectors, and the node's check of its own
standing evidence on dcap-qvl's real TDX quote with its collateral."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from appliance.node.standing import assess, tdx_collateral_in
from attestation.evidence import Evidence, Platform
from attestation.facts import evidence_facts
from attestation.tdx.files import load_collateral_dir
from attestation.tdx.quote import parse_quote


def test_snp_facts_of_the_real_report(vectors: Path) -> None:
    snp = vectors / "sev-snp"
    chain = ((snp / "vcek.testcer").read_bytes(),
             (snp / "amd-roots" / "ask_ark_milan.pem").read_bytes())
    evidence = Evidence(Platform.SEV_SNP, (snp / "attestation.bin").read_bytes(), chain)
    facts = evidence_facts(evidence)
    assert set(facts.reported_tcb) == {"bootloader", "tee", "snp", "microcode"}
    assert set(facts.committed_tcb) == set(facts.reported_tcb)
    assert facts.expiring == "SEV-VCEK" and facts.earliest_expiry is not None
    assert facts.earliest_expiry.date().isoformat() == "2029-09-24"


def test_tdx_facts_include_the_collateral(vectors: Path) -> None:
    base = vectors / "tdx-dcap-qvl"
    evidence = Evidence(Platform.TDX, (base / "tdx_quote").read_bytes())
    bare = evidence_facts(evidence)
    assert bare.reported_tcb == {} and bare.expiring in {"PCK leaf", "Intel SGX PCK Platform CA",
                                                         "Intel SGX Root CA"}
    full = evidence_facts(evidence, load_collateral_dir(base / "collateral"))
    assert full.earliest_expiry is not None and bare.earliest_expiry is not None
    assert full.earliest_expiry < bare.earliest_expiry
    assert full.earliest_expiry.date().isoformat() == "2025-07-19"
    assert full.expiring in {"TCB info", "PCK CRL", "QE identity", "root CA CRL"}


def _item_for(quote: bytes, tmp_path: Path) -> items.Item:
    body = {"platform": "tdx", "evidence": base64.b64encode(quote).decode(), "certificates": [],
            "node_key": "", "config_digest": "", "nonce": ""}
    return items.sign(NodeIdentity.load_or_create(tmp_path / "id"),
                      tags=[("Type", "Attestation"), ("TEE-Platform", "tdx")],
                      data=json.dumps(body).encode())


def test_assess_a_real_tdx_quote_with_and_without_collateral(vectors: Path,
                                                             tmp_path: Path) -> None:
    base = vectors / "tdx-dcap-qvl"
    quote = (base / "tdx_quote").read_bytes()
    item = _item_for(quote, tmp_path)
    when = datetime(2025, 7, 1, tzinfo=UTC)
    bound = parse_quote(quote).body.report_data
    checked = assess(item, when, bound, tdx_collateral_in(base / "collateral"))
    assert (checked.ok, checked.tcb_status, checked.step, checked.platform) == (
        True, "UpToDate", "TDX-20", "tdx")
    blind = assess(item, when, bound, tdx_collateral_in(tmp_path / "absent"))
    assert (blind.ok, blind.tcb_status, blind.step) == (False, "unknown", "collateral")
    assert blind.facts is not None and blind.facts.expiring
    refused = assess(item, when, bytes(64), tdx_collateral_in(base / "collateral"))
    assert (refused.ok, refused.step) == (False, "TDX-19")
