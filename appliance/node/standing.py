"""The standing attestation: which one Results name now, and what an operator watches about it.

The node makes one at start and again every ``node.attestation_refresh_seconds`` (or when asked);
each new Result names the standing attestation current when it is signed. For TDX the node
reads collateral from ``DATA_DIR/collateral`` when that directory exists (the layout of
``attestation verify --collateral``; refresh it from Intel PCS or a warmed trust-fetcher
cache). :func:`assess` checks the node's own evidence with the pure verifier (platform, TCB, the
step it reached) and reads its expiry facts; it never raises, so a TEE or collateral problem
shows in metrics, not as a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.ao import items
from attestation.bundle import decode_evidence
from attestation.errors import AttestationError, CollateralError, VerificationFailed
from attestation.evidence import Platform
from attestation.facts import EvidenceFacts, evidence_facts
from attestation.policy import Policy
from attestation.tdx.collateral import TdxCollateral
from attestation.tdx.files import load_collateral_dir
from attestation.verify import verify_evidence

log = logging.getLogger("appliance.node")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class StandingAttestation:
    """The current standing attestation item, when it was made, and what checking it found.

    ``tcb_status`` is the TDX TCB status when verification got that far (``unknown`` otherwise,
    and for SNP, whose TCB is ``facts.reported_tcb``/``committed_tcb``); ``step`` is the last
    step passed (``ok``) or the step that refused it, or ``collateral`` / ``malformed``.
    """

    id: str
    made_at: datetime
    platform: str
    facts: EvidenceFacts | None
    tcb_status: str
    step: str
    ok: bool


def assess(item: items.Item, made_at: datetime, expected_report_data: bytes,
           tdx_collateral: TdxCollateral | None = None) -> StandingAttestation:
    """Verify the node's own Attestation item at ``made_at`` with the certificates it carries
    (and, for TDX, ``tdx_collateral``: without it the check stops at ``collateral``)."""
    platform = next((v for n, v in item.tags if n == "TEE-Platform"), UNKNOWN)
    try:
        evidence = decode_evidence(item.data)
        facts: EvidenceFacts | None = evidence_facts(evidence, tdx_collateral)
    except AttestationError:
        return StandingAttestation(item.id, made_at, platform, None, UNKNOWN, "malformed", False)
    policy = Policy(any_measurement=True, expected_report_data=expected_report_data)
    try:
        verified = verify_evidence(evidence, policy, made_at.astimezone(UTC),
                                   tdx_collateral=tdx_collateral,
                                   allow_emulated=evidence.platform is Platform.EMULATED)
    except VerificationFailed as exc:
        return StandingAttestation(item.id, made_at, platform, facts, UNKNOWN, exc.step, False)
    except AttestationError:
        return StandingAttestation(item.id, made_at, platform, facts, UNKNOWN, "collateral",
                                   False)
    status = str(verified.tcb.get("status", UNKNOWN))
    return StandingAttestation(item.id, made_at, platform, facts, status, verified.steps[-1],
                               True)


def tdx_collateral_in(directory: Path) -> TdxCollateral | None:
    """TDX collateral from ``directory`` when it exists; unusable collateral is logged, not
    raised (the standing attestation is still made, its check stops at ``collateral``)."""
    if not directory.is_dir():
        return None
    try:
        return load_collateral_dir(directory)
    except CollateralError as exc:
        log.warning("TDX collateral in %s is unusable: %s", directory, exc)
        return None
