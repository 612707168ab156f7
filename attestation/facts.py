"""What an operator watches about a piece of evidence, read without verifying it: its TCB and the
earliest expiry among its certificates and collateral. Pure: bytes in, facts out, no clock.

Steps: (1) parse the report or quote (MalformedEvidence otherwise); (2) SNP/emulated: REPORTED_TCB
and COMMITTED_TCB decoded with the chain's product layout (SEV-SNP ABI TCB_VERSION); (3) the
certificates carried (VCEK/VLEK, ASK, ARK; TDX: the PCK chain in the quote) and, for TDX, the
collateral given (TCB info and QE identity nextUpdate, CRL nextUpdate): the earliest end wins.
The TDX TCB status needs verification (``VerifiedEvidence.tcb["status"]``), not these facts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from attestation.crl import load_crl
from attestation.errors import MalformedEvidence
from attestation.evidence import Evidence, Platform
from attestation.snp import certs, tcb
from attestation.snp.report import parse_report
from attestation.tdx import collateral as coll
from attestation.tdx import pck
from attestation.tdx.quote import parse_quote


@dataclass(frozen=True)
class EvidenceFacts:
    """``reported_tcb`` / ``committed_tcb`` (SNP and emulated; empty for TDX), and the earliest
    expiry with what expires then (a kind: ``VCEK``, ``PCK leaf``, ``TCB info``…)."""

    platform: Platform
    reported_tcb: dict[str, int] = field(default_factory=dict)
    committed_tcb: dict[str, int] = field(default_factory=dict)
    earliest_expiry: datetime | None = None
    expiring: str = ""


def _earliest(ends: list[tuple[datetime, str]]) -> tuple[datetime | None, str]:
    if not ends:
        return None, ""
    when, what = min(ends, key=lambda e: e[0])
    return when, what


def _cert_kind(cert: x509.Certificate, fallback: str) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else fallback


def _snp_facts(evidence: Evidence) -> EvidenceFacts:
    report = parse_report(evidence.raw)
    pool = certs.load_certificates(evidence.certificates)
    fingerprints = {certs.sha256_fingerprint(c) for c in pool}
    product = next((p for p, fp in certs.ARK_SHA256.items() if fp in fingerprints), "Milan")
    ends = [(c.not_valid_after_utc, _cert_kind(c, "certificate")) for c in pool]
    when, what = _earliest(ends)
    return EvidenceFacts(evidence.platform, tcb.decode_tcb(report.reported_tcb, product),
                         tcb.decode_tcb(report.committed_tcb, product), when, what)


def _tdx_facts(evidence: Evidence, collateral: coll.TdxCollateral | None) -> EvidenceFacts:
    quote = parse_quote(evidence.raw)
    chain = pck.load_pem_chain(quote.pck_chain_pem, "PCK certificate chain in the quote")
    ends = [(c.not_valid_after_utc, "PCK leaf" if pck.common_name(c) == pck.PCK_CN
             else _cert_kind(c, "certificate")) for c in chain]
    if collateral is not None:
        for raw in collateral.tcb_infos:
            ends.append((coll.tcb_info_response(raw)[1].next_update, "TCB info"))
        ends.append((coll.qe_identity_response(collateral.qe_identity)[1].next_update,
                     "QE identity"))
        for blob, what in ((collateral.pck_crl, "PCK CRL"), (collateral.root_crl, "root CA CRL")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nxt = load_crl(blob, what).next_update_utc
            if nxt is not None:
                ends.append((nxt, what))
    when, what = _earliest(ends)
    return EvidenceFacts(evidence.platform, earliest_expiry=when, expiring=what)


def evidence_facts(evidence: Evidence,
                   tdx_collateral: coll.TdxCollateral | None = None) -> EvidenceFacts:
    """The watchable facts of ``evidence`` (MalformedEvidence when it does not parse)."""
    if evidence.platform is Platform.TDX:
        return _tdx_facts(evidence, tdx_collateral)
    if evidence.platform in (Platform.SEV_SNP, Platform.EMULATED):
        return _snp_facts(evidence)
    raise MalformedEvidence(f"no facts for platform {evidence.platform}")
