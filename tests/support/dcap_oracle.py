"""dcap-qvl (Phala's Rust DCAP verifier, PyPI ``dcap-qvl``) as a second opinion on TDX verdicts.

:func:`oracle` imports it or skips (fails when ``AO_APPLIANCE_REQUIRE_DCAP=1``, as CI sets);
:func:`theirs` and :func:`ours` reduce each verifier's answer to a :class:`Verdict` (accepted, TCB
status) over the same quote, collateral, trust anchor and time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificate

from attestation.crl import load_crl
from attestation.errors import AttestationError
from attestation.policy import Policy, TdxPolicy
from attestation.tdx import collateral as coll
from attestation.tdx import verify as tdx_verify
from attestation.tdx.pck import INTEL_SGX_ROOT_CA_SHA256
from tests.support.paths import _missing

DCAP_QVL_VERSION = "0.7.0"
EVERY_STATUS = Policy(any_measurement=True,
                      tdx=TdxPolicy(accepted_tcb_status=coll.TCB_STATUSES - {"Revoked"}))
"""Our policy for the comparison: dcap-qvl's ``verify`` returns every TCB status but Revoked (and,
like our default policy, refuses DEBUG TDs and TDs without SEPT_VE_DISABLE)."""


@dataclass(frozen=True)
class Verdict:
    """A verifier's answer: accepted with a TCB status, or rejected (status ``None``)."""

    accepted: bool
    status: str | None
    why: str = ""

    def same(self, other: Verdict) -> bool:
        """Same accept/reject and, when accepted, the same TCB status."""
        return (self.accepted, self.status) == (other.accepted, other.status)


def oracle() -> ModuleType:
    """The installed dcap_qvl module at the pinned version, or skip/fail saying why."""
    try:
        import dcap_qvl  # noqa: PLC0415 - optional test dependency
    except ImportError as exc:
        _missing(f"dcap-qvl=={DCAP_QVL_VERSION} is not installed ({exc}); pip install "
                 "'.[test]'", "AO_APPLIANCE_REQUIRE_DCAP")
        raise
    if dcap_qvl.__version__ != DCAP_QVL_VERSION:
        _missing(f"dcap-qvl {dcap_qvl.__version__} installed, the suite pins "
                 f"{DCAP_QVL_VERSION}", "AO_APPLIANCE_REQUIRE_DCAP")
    return dcap_qvl


def _der_crl(blob: bytes) -> bytes:
    return load_crl(blob, "CRL").public_bytes(Encoding.DER)


def to_dcap(dcap: ModuleType, c: coll.TdxCollateral, fmspc: bytes | None = None) -> Any:
    """Our collateral as dcap-qvl's ``QuoteCollateralV3`` (the same bytes, its shapes)."""
    tcb = [coll.tcb_info_response(r)[0] for r in c.tcb_infos]
    chosen = next((s for s in tcb if fmspc is not None
                   and s.value.get("fmspc", "").lower() == fmspc.hex()), tcb[0])
    qe = coll.qe_identity_response(c.qe_identity)[0]
    return dcap.QuoteCollateralV3(
        pck_crl_issuer_chain=c.pck_crl_issuer_chain.decode(),
        root_ca_crl=_der_crl(c.root_crl), pck_crl=_der_crl(c.pck_crl),
        tcb_info_issuer_chain=c.tcb_info_issuer_chain.decode(),
        tcb_info=chosen.body.decode(), tcb_info_signature=chosen.signature,
        qe_identity_issuer_chain=c.qe_identity_issuer_chain.decode(),
        qe_identity=qe.body.decode(), qe_identity_signature=qe.signature)


def theirs(dcap: ModuleType, quote: bytes, c: coll.TdxCollateral, now: datetime,
           root_pem: bytes | None = None) -> Verdict:
    """dcap-qvl's verdict; with ``root_pem`` it trusts that root instead of Intel's."""
    try:
        collateral = to_dcap(dcap, c)
    except AttestationError as exc:  # collateral we cannot even parse: no second opinion needed
        return Verdict(False, None, f"unparseable collateral: {exc}")
    secs = int(now.timestamp())
    try:
        if root_pem is None:
            report = dcap.verify(quote, collateral, secs)
        else:
            root = load_pem_x509_certificate(root_pem).public_bytes(Encoding.DER)
            report = dcap.verify_with_root_ca(quote, collateral, root, secs)
    except (ValueError, RuntimeError) as exc:
        return Verdict(False, None, str(exc))
    return Verdict(True, json.loads(report.to_json())["status"])


def ours(quote: bytes, c: coll.TdxCollateral, now: datetime, pin: str | None = None) -> Verdict:
    """Our verdict under :data:`EVERY_STATUS`; ``pin`` replaces the Intel root fingerprint."""
    try:
        result = tdx_verify._verify(quote, c, EVERY_STATUS, now, pin or INTEL_SGX_ROOT_CA_SHA256)
    except AttestationError as exc:
        return Verdict(False, None, str(exc))
    return Verdict(True, str(result.tcb["status"]))
