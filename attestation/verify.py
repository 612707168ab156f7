"""One entry point for every platform: evidence + trust material + policy + now → verified facts.

Pure: no I/O, no clock. The caller supplies certificates (VCEK/VLEK, ASK/ASVK, ARK; DER or PEM) and
TDX collateral it loaded or fetched elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from attestation.errors import CollateralError
from attestation.evidence import Evidence, Platform, VerifiedEvidence
from attestation.policy import Policy
from attestation.snp.verify import verify_emulated, verify_snp
from attestation.tdx.verify import verify_tdx


def verify_evidence(
    evidence: Evidence,
    policy: Policy,
    now: datetime,
    *,
    certificates: Sequence[bytes] = (),
    tdx_collateral: object | None = None,
    snp_crls: Sequence[bytes] = (),
    allow_emulated: bool = False,
    emulated_root_sha256: bytes | None = None,
) -> VerifiedEvidence:
    """Verify ``evidence`` with the verifier for its platform.

    ``certificates`` are added to those carried by the evidence; ``snp_crls`` are AMD KDS CRLs.
    Emulated evidence is refused (``EmulatedEvidenceRefused``, step EMU-0) unless
    ``allow_emulated`` is True.
    """
    pool = (*evidence.certificates, *certificates)
    if evidence.platform is Platform.SEV_SNP:
        return verify_snp(evidence.raw, pool, policy, now, crls=snp_crls)
    if evidence.platform is Platform.EMULATED:
        return verify_emulated(evidence.raw, pool, policy, now, allow_emulated=allow_emulated,
                               expected_root_sha256=emulated_root_sha256)
    if tdx_collateral is None:
        raise CollateralError(
            "TDX verification needs collateral (TCB info, QE identity, CRLs, Intel SGX Root CA)")
    return verify_tdx(evidence.raw, tdx_collateral, policy, now)
