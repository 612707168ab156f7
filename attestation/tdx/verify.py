"""Offline verification of Intel TDX quotes (DCAP, ECDSA P-256): pure, no I/O, no clock.

Steps TDX-1 … TDX-20 follow the Intel DCAP quote verification flow: quote structure, PCK chain to
the pinned Intel SGX Root CA, CRLs, the QE report and quote signatures, signed collateral (QE
identity, TCB info), TCB level selection, then the caller's policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation.crl import load_crl
from attestation.errors import CollateralError, MalformedEvidence, VerificationFailed
from attestation.evidence import Platform, VerifiedEvidence
from attestation.policy import Policy
from attestation.steps import Steps
from attestation.tdx import collateral as coll
from attestation.tdx import pck
from attestation.tdx.quote import INTEL_QE_VENDOR_ID, TdxQuote, parse_quote

QUOTE_SPEC = "Intel TDX DCAP Quoting Library API, Appendix A (quote v4/v5 format)"
PCK_SPEC = "Intel SGX PCK Certificate and CRL Profile"
PCS_SPEC = "Intel PCS API v4"
VALIDITY_SPEC = "RFC 5280 §4.1.2.5 validity"

_CONFIG_NEEDED = frozenset({"ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"})
_UP_TO_DATE_ISH = frozenset({"UpToDate", "SWHardeningNeeded"})


@dataclass(frozen=True)
class _Chain:
    leaf: x509.Certificate
    ca: x509.Certificate
    root: x509.Certificate
    ext: pck.PckExtensions


def _p256_signature_ok(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """ECDSA P-256 SHA-256 with a raw 64-byte r||s (big-endian) signature."""
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except Exception:  # noqa: BLE001 - any failure to verify is a rejection
        return False
    return True


def _raw_p256_key(raw: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        return None


def _within(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _certs(blob: bytes, step: str, spec: str, what: str) -> list[x509.Certificate]:
    try:
        return pck.load_pem_chain(blob, what)
    except MalformedEvidence as exc:
        raise VerificationFailed(step, spec, str(exc)) from exc


def _pck_chain(quote: TdxQuote, collateral: coll.TdxCollateral, pin: str,
               steps: Steps) -> _Chain:
    step, spec = "TDX-2", f"{PCK_SPEC}: PCK leaf ← PCK Platform/Processor CA ← Intel SGX Root CA"
    certs = _certs(quote.pck_chain_pem, step, spec, "PCK certificate chain in the quote")
    anchors = list(certs)
    if collateral.root_ca:
        given = _collateral_certs(collateral.root_ca, "root CA")
        steps.check(pck.pinned_root(given, pin) is not None, step, spec,
                    "the collateral's root CA is not the pinned Intel SGX Root CA")
        anchors += given
    for cert in certs:
        steps.check(cert.subject != cert.issuer or pck.fingerprint(cert) == pin, step, spec,
                    f"self-signed {pck.common_name(cert)!r} in the quote is not the pinned "
                    "Intel SGX Root CA")
    root = pck.pinned_root(anchors, pin)
    steps.check(root is not None, step, spec, "the pinned Intel SGX Root CA is neither in the "
                f"quote nor in the collateral (SHA-256 {pin})")
    assert root is not None
    leaves = [c for c in certs if pck.common_name(c) == pck.PCK_CN]
    steps.check(len(leaves) == 1, step, spec,
                f"expected one {pck.PCK_CN!r} in the quote's chain, found {len(leaves)}")
    leaf = leaves[0]
    cas = [c for c in certs if c.subject not in (leaf.subject, root.subject)]
    steps.check(len(cas) == 1 and len(certs) - len(cas) <= 2 and
                len({c.subject for c in certs}) == len(certs), step, spec,
                "the quote's chain must be exactly PCK leaf, PCK CA and optionally the root")
    ca = cas[0]
    steps.check(pck.common_name(ca) in pck.PCK_CA_CNS and pck.is_ca(ca), step, spec,
                f"{pck.common_name(ca)!r} is not an Intel SGX PCK Platform/Processor CA")
    steps.check(pck.issued_by(ca, root), step, spec,
                f"{pck.common_name(ca)!r} is not signed by the Intel SGX Root CA")
    steps.check(pck.issued_by(leaf, ca) and not pck.is_ca(leaf), step, spec,
                f"the PCK leaf is not signed by {pck.common_name(ca)!r}")
    steps.check(pck.p256_key(leaf) is not None, step, spec, "the PCK leaf key is not P-256")
    try:
        ext = pck.pck_extensions(leaf)
    except MalformedEvidence as exc:
        raise VerificationFailed(step, f"{PCK_SPEC}: SGX extensions", str(exc)) from exc
    return _Chain(leaf, ca, root, ext)


def _collateral_certs(blob: bytes, what: str) -> list[x509.Certificate]:
    try:
        if blob.lstrip().startswith(b"-----BEGIN"):
            return pck.load_pem_chain(blob, what)
        return [x509.load_der_x509_certificate(blob)]
    except (MalformedEvidence, ValueError) as exc:
        raise CollateralError(f"TDX collateral {what}: {exc}") from exc


def _collateral_crl(blob: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        return load_crl(blob, what)
    except MalformedEvidence as exc:
        raise CollateralError(f"TDX collateral: {exc}") from exc


def _check_crl(crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: datetime,
               what: str, steps: Steps) -> None:
    step, spec = "TDX-4", f"{PCK_SPEC}: {what}; RFC 5280 §5"
    steps.check(crl.issuer == issuer.subject, step, spec,
                f"{what} is issued by {crl.issuer.rfc4514_string()}, expected "
                f"{issuer.subject.rfc4514_string()}")
    key = pck.p256_key(issuer)
    steps.check(key is not None and crl.is_signature_valid(key), step, spec,
                f"{what} signature does not verify with {pck.common_name(issuer)!r}")
    nxt = crl.next_update_utc
    steps.check(nxt is not None and crl.last_update_utc <= now <= nxt, step, spec,
                f"{what} is not current at {now.isoformat()} (valid {crl.last_update_utc} … "
                f"{nxt})")


def _not_revoked(crl: x509.CertificateRevocationList, cert: x509.Certificate, what: str,
                 steps: Steps) -> None:
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    steps.check(entry is None, "TDX-4", f"{PCK_SPEC}: revocation", f"{what} (serial "
                f"{cert.serial_number:x}) is revoked since {entry and entry.revocation_date_utc}")


def _signing_cert(blob: bytes, root: x509.Certificate, pin: str, root_crl:
                  x509.CertificateRevocationList, now: datetime, step: str, spec: str,
                  steps: Steps) -> x509.Certificate:
    """The Intel SGX TCB Signing certificate of an issuer chain, checked to the pinned root."""
    certs = _collateral_certs(blob, f"{step} issuer chain")
    for cert in certs:
        steps.check(cert.subject != cert.issuer or pck.fingerprint(cert) == pin, step, spec,
                    "the issuer chain's root is not the pinned Intel SGX Root CA")
    signers = [c for c in certs if pck.common_name(c) == pck.TCB_SIGNING_CN]
    steps.check(len(signers) == 1, step, spec, f"expected one {pck.TCB_SIGNING_CN!r} "
                f"certificate in the issuer chain, found {len(signers)}")
    signer = signers[0]
    steps.check(pck.issued_by(signer, root), step, spec,
                f"{pck.TCB_SIGNING_CN!r} is not signed by the Intel SGX Root CA")
    steps.check(_within(signer, now), step, VALIDITY_SPEC,
                f"{pck.TCB_SIGNING_CN!r} not valid at {now.isoformat()}")
    entry = root_crl.get_revoked_certificate_by_serial_number(signer.serial_number)
    steps.check(entry is None, step, f"{PCK_SPEC}: revocation",
                f"{pck.TCB_SIGNING_CN!r} is revoked by the root CA CRL")
    return signer


def _signed_by(signed: coll.SignedJson, signer: x509.Certificate) -> bool:
    key = pck.p256_key(signer)
    return key is not None and _p256_signature_ok(key, signed.signature, signed.body)


def _isv_status(levels: Sequence[coll.IsvLevel], isv_svn: int) -> coll.IsvLevel | None:
    """The first (highest) level whose ISVSVN the reported one reaches."""
    return next((level for level in levels if isv_svn >= level.isv_svn), None)


def _converge(tcb_status: str, other: str) -> str:
    """Combine a TCB level status with a QE or TDX module status (OutOfDate / Revoked win)."""
    if other == "Revoked":
        return "Revoked"
    if other == "OutOfDate":
        if tcb_status in _UP_TO_DATE_ISH:
            return "OutOfDate"
        if tcb_status in _CONFIG_NEEDED:
            return "OutOfDateConfigurationNeeded"
    return tcb_status


def _tdx_components_ok(tee_tcb_svn: bytes, level: coll.TcbLevel) -> bool:
    start = 2 if tee_tcb_svn[1] > 0 else 0
    return all(tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, 16))


def _matching_level(info: coll.TcbInfo, ext: pck.PckExtensions,
                    tee_tcb_svn: bytes) -> coll.TcbLevel | None:
    for level in info.levels:
        if (all(have >= need for have, need in zip(ext.sgx_tcb_components,
                                                    level.sgx_components, strict=True))
                and ext.pce_svn >= level.pce_svn and _tdx_components_ok(tee_tcb_svn, level)):
            return level
    return None


def _shortfall(level: coll.TcbLevel, ext: pck.PckExtensions, tee_tcb_svn: bytes) -> str:
    """What keeps the platform below ``level``: each component it does not reach."""
    short = [f"SGX component {i + 1} is {have} < {need}" for i, (have, need) in
             enumerate(zip(ext.sgx_tcb_components, level.sgx_components, strict=True))
             if have < need]
    if ext.pce_svn < level.pce_svn:
        short.append(f"PCESVN is {ext.pce_svn} < {level.pce_svn}")
    start = 2 if tee_tcb_svn[1] > 0 else 0
    short += [f"TEE_TCB_SVN[{i}] is {tee_tcb_svn[i]} < {level.tdx_components[i]}"
              for i in range(start, 16) if tee_tcb_svn[i] < level.tdx_components[i]]
    return ", ".join(short)


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def verify_tdx(raw: bytes, collateral: object, policy: Policy, now: datetime) -> VerifiedEvidence:
    """Verify a TDX quote with Intel PCS collateral against the pinned Intel SGX Root CA."""
    return _verify(raw, collateral, policy, now, pck.INTEL_SGX_ROOT_CA_SHA256)


def _verify(raw: bytes, collateral: object, policy: Policy, now: datetime,
            pin: str) -> VerifiedEvidence:
    """:func:`verify_tdx` with the trust anchor as a parameter (tests use their own root)."""
    if not isinstance(collateral, coll.TdxCollateral):
        raise CollateralError("TDX verification needs a TdxCollateral (see attestation.tdx.files)")
    steps = Steps()
    try:
        quote = parse_quote(raw)
    except MalformedEvidence as exc:
        raise VerificationFailed("TDX-1", QUOTE_SPEC, str(exc)) from exc
    steps.check(policy.tdx.allow_trailing_bytes or not quote.trailing_bytes, "TDX-1",
                f"{QUOTE_SPEC}; policy tdx.allow_trailing_bytes",
                f"{quote.trailing_bytes} unsigned bytes follow the signature data and the "
                "policy refuses trailing bytes")
    if quote.trailing_bytes:
        steps.warn(f"{quote.trailing_bytes} unsigned bytes after the quote's signature data were "
                   "ignored (covered by no signature)")
    body = quote.body

    chain = _pck_chain(quote, collateral, pin, steps)
    for name, cert in (("Intel SGX Root CA", chain.root), (pck.common_name(chain.ca), chain.ca),
                       ("PCK leaf", chain.leaf)):
        steps.check(_within(cert, now), "TDX-3", VALIDITY_SPEC,
                    f"{name} not valid at {now.isoformat()} ({cert.not_valid_before_utc} … "
                    f"{cert.not_valid_after_utc})")

    root_crl = _collateral_crl(collateral.root_crl, "root CA CRL")
    pck_crl = _collateral_crl(collateral.pck_crl, "PCK CRL")
    _check_crl(root_crl, chain.root, now, "Intel SGX Root CA CRL", steps)
    _check_crl(pck_crl, chain.ca, now, f"{pck.common_name(chain.ca)} CRL", steps)
    if collateral.pck_crl_issuer_chain:
        issuers = _collateral_certs(collateral.pck_crl_issuer_chain, "PCK CRL issuer chain")
        steps.check(any(c.subject == chain.ca.subject and c.public_key() == chain.ca.public_key()
                        for c in issuers), "TDX-4", f"{PCK_SPEC}: PCK CRL issuer chain",
                    "the PCK CRL issuer chain does not hold the quote's PCK CA")
    _not_revoked(root_crl, chain.ca, pck.common_name(chain.ca), steps)
    _not_revoked(pck_crl, chain.leaf, "the PCK leaf", steps)

    leaf_key = pck.p256_key(chain.leaf)
    assert leaf_key is not None
    steps.check(_p256_signature_ok(leaf_key, quote.qe_report_signature, quote.qe_report.raw),
                "TDX-5", f"{QUOTE_SPEC}: QE Report Certification Data, QE report signature "
                "(ECDSA P-256 SHA-256 by the PCK key)",
                "the QE report signature does not verify with the PCK leaf key")
    binding = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
    steps.check(quote.qe_report.report_data == binding + bytes(32), "TDX-6",
                f"{QUOTE_SPEC}: QE report REPORTDATA = SHA-256(attestation key || QE auth data)",
                "the QE report does not bind this attestation key and QE auth data")
    att_key = _raw_p256_key(quote.attestation_key)
    steps.check(att_key is not None and _p256_signature_ok(att_key, quote.signature, quote.signed),
                "TDX-7", f"{QUOTE_SPEC}: Quote Signature Data (ECDSA P-256 SHA-256 over header "
                "|| TD quote body)", "the quote signature does not verify with the attestation key")

    ext = chain.ext
    try:
        qe_signed, qe_id = coll.qe_identity_response(collateral.qe_identity)
        tcb_signed, tcb_info = _select_tcb_info(collateral.tcb_infos, ext)
    except MalformedEvidence as exc:
        raise CollateralError(f"TDX collateral: {exc}") from exc
    qe_spec = f"{PCS_SPEC}: TDX QE Identity v2, signed by Intel SGX TCB Signing"
    signer = _signing_cert(collateral.qe_identity_issuer_chain, chain.root, pin, root_crl, now,
                           "TDX-8", qe_spec, steps)
    steps.check(_signed_by(qe_signed, signer), "TDX-8", qe_spec,
                "the QE identity signature does not verify over the enclaveIdentity bytes")
    tcb_spec = f"{PCS_SPEC}: TDX TCB Info v3, signed by Intel SGX TCB Signing"
    signer = _signing_cert(collateral.tcb_info_issuer_chain, chain.root, pin, root_crl, now,
                           "TDX-9", tcb_spec, steps)
    steps.check(_signed_by(tcb_signed, signer), "TDX-9", tcb_spec,
                "the TCB info signature does not verify over the tcbInfo bytes")
    for what, issued, nxt in (("QE identity", qe_id.issue_date, qe_id.next_update),
                              ("TCB info", tcb_info.issue_date, tcb_info.next_update)):
        steps.check(issued <= now <= nxt, "TDX-10", f"{PCS_SPEC}: issueDate / nextUpdate",
                    f"{what} is not current at {now.isoformat()} (issued {issued.isoformat()}, "
                    f"next update {nxt.isoformat()})")

    qe = quote.qe_report
    qe_match = f"{PCS_SPEC}: TDX QE Identity v2 vs the QE report"
    steps.check(quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID, "TDX-11",
                f"{QUOTE_SPEC}: header QE Vendor ID",
                f"QE vendor ID {quote.header.qe_vendor_id.hex()} is not Intel's")
    steps.check(qe.mr_signer == qe_id.mr_signer, "TDX-11", qe_match,
                f"QE MRSIGNER {qe.mr_signer.hex()} is not {qe_id.mr_signer.hex()}")
    steps.check(qe.isv_prod_id == qe_id.isv_prod_id, "TDX-11", qe_match,
                f"QE ISVPRODID {qe.isv_prod_id} is not {qe_id.isv_prod_id}")
    steps.check(qe.misc_select & qe_id.misc_select_mask == qe_id.misc_select, "TDX-11", qe_match,
                f"QE MISCSELECT {qe.misc_select:08x} does not match under the mask")
    steps.check(_masked(qe.attributes, qe_id.attributes_mask) == qe_id.attributes, "TDX-11",
                qe_match, f"QE ATTRIBUTES {qe.attributes.hex()} do not match under the mask")
    qe_level = _isv_status(qe_id.levels, qe.isv_svn)
    steps.check(qe_level is not None, "TDX-11", qe_match,
                f"QE ISVSVN {qe.isv_svn} is below every QE identity TCB level")
    assert qe_level is not None

    platform = f"{PCK_SPEC}: SGX extensions (FMSPC, PCE-ID) vs TCB Info v3"
    steps.check(ext.fmspc == tcb_info.fmspc, "TDX-12", platform,
                f"PCK FMSPC {ext.fmspc.hex()} but the TCB info is for {tcb_info.fmspc.hex()}")
    steps.check(ext.pce_id == tcb_info.pce_id, "TDX-12", platform,
                f"PCK PCE-ID {ext.pce_id.hex()} but the TCB info says {tcb_info.pce_id.hex()}")

    module_spec = f"{PCS_SPEC}: TCB Info v3 tdxModule / tdxModuleIdentities"
    tee = body.tee_tcb_svn
    module_identity: coll.TdxModuleIdentity | None = None
    module = tcb_info.tdx_module
    if tee[1] > 0:
        wanted = f"TDX_{tee[1]:02X}"
        module_identity = next((m for m in tcb_info.tdx_module_identities
                                if m.id.upper() == wanted), None)
        steps.check(module_identity is not None, "TDX-13", module_spec,
                    f"TEE_TCB_SVN names TDX module version {tee[1]} but the TCB info has no "
                    f"{wanted} identity")
        assert module_identity is not None
        module = module_identity.module
    steps.check(module is not None, "TDX-13", module_spec, "the TCB info has no tdxModule")
    assert module is not None
    steps.check(body.mr_signer_seam == module.mr_signer, "TDX-13", module_spec,
                f"MRSIGNERSEAM {body.mr_signer_seam.hex()} is not {module.mr_signer.hex()}")
    steps.check(_masked(body.seam_attributes, module.attributes_mask) == module.attributes,
                "TDX-13", module_spec,
                f"SEAMATTRIBUTES {body.seam_attributes.hex()} do not match under the mask")

    level_spec = f"{PCS_SPEC}: TCB Info v3 tcbLevels (sgxtcbcomponents, pcesvn, tdxtcbcomponents)"
    level = _matching_level(tcb_info, ext, tee)
    steps.check(level is not None, "TDX-14", level_spec,
                "no TCB level is reached by this platform (TCB not supported): PCK SGX "
                f"components {bytes(ext.sgx_tcb_components).hex()} PCESVN {ext.pce_svn}, "
                f"TEE_TCB_SVN {tee.hex()}; TCB info {tcb_info.fmspc.hex()} issued "
                f"{tcb_info.issue_date.date()} lists levels from "
                + ", ".join(f"{bytes(lv.sgx_components).hex()}/{lv.pce_svn}/"
                            f"{bytes(lv.tdx_components).hex()}" for lv in tcb_info.levels)
                + f"; below its lowest level because {_shortfall(tcb_info.levels[-1], ext, tee)}")
    assert level is not None
    status = level.status
    module_status = ""
    if module_identity is not None:
        module_level = _isv_status(module_identity.levels, tee[0])
        steps.check(module_level is not None, "TDX-14", module_spec,
                    f"TDX module SVN {tee[0]} is below every {module_identity.id} TCB level")
        assert module_level is not None
        module_status = module_level.status
        status = _converge(status, module_status)
    status = _converge(status, qe_level.status)
    steps.check(status != "Revoked" and status in policy.tdx.accepted_tcb_status, "TDX-15",
                f"{PCS_SPEC}: tcbStatus; policy tdx.accepted_tcb_status",
                f"TCB status {status} (platform {level.status}, QE {qe_level.status}"
                + (f", TDX module {module_status}" if module_status else "")
                + (") is never accepted" if status == "Revoked" else
                   f") is not accepted ({', '.join(sorted(policy.tdx.accepted_tcb_status))})"))

    _check_policy(quote, policy, steps)
    tcb: dict[str, int | str] = {
        "status": status,
        "platform_status": level.status,
        "qe_status": qe_level.status,
        "tcb_date": level.tcb_date.isoformat(),
        "tee_tcb_svn": tee.hex(),
        "sgx_tcb_components": bytes(ext.sgx_tcb_components).hex(),
        "pce_svn": ext.pce_svn,
        "qe_isv_svn": qe.isv_svn,
        "fmspc": ext.fmspc.hex(),
        "tcb_evaluation_data_number": tcb_info.tcb_evaluation_data_number,
    }
    if module_status:
        tcb["tdx_module_status"] = module_status
    details = {
        "quote_version": str(quote.header.version),
        "td_attributes": body.td_attributes.hex(),
        "xfam": body.xfam.hex(),
        "mrseam": body.mr_seam.hex(),
        "mrsignerseam": body.mr_signer_seam.hex(),
        "mrconfigid": body.mr_config_id.hex(),
        "mrowner": body.mr_owner.hex(),
        "mrownerconfig": body.mr_owner_config.hex(),
        **{f"rtmr{i}": r.hex() for i, r in enumerate(body.rtmrs)},
        "pck_ca": pck.common_name(chain.ca),
        "advisory_ids": ",".join(level.advisory_ids) or "none",
        "trailing_bytes": str(quote.trailing_bytes),
    }
    return VerifiedEvidence(
        platform=Platform.TDX, measurement=body.mr_td, report_data=body.report_data, tcb=tcb,
        debug=body.debug, steps=tuple(steps.passed), details=details,
        warnings=tuple(steps.warnings),
    )


def _select_tcb_info(responses: Sequence[bytes],
                     ext: pck.PckExtensions) -> tuple[coll.SignedJson, coll.TcbInfo]:
    """The TCB info for the PCK's FMSPC; with none, the only one given (TDX-12 then rejects)."""
    if not responses:
        raise CollateralError("TDX collateral holds no TCB info")
    parsed = [coll.tcb_info_response(r) for r in responses]
    matching = [p for p in parsed if p[1].fmspc == ext.fmspc]
    if len(matching) > 1:
        raise CollateralError(f"TDX collateral holds {len(matching)} TCB infos for FMSPC "
                              f"{ext.fmspc.hex()}; give one")
    if matching:
        return matching[0]
    if len(parsed) == 1:
        return parsed[0]
    raise VerificationFailed("TDX-12", f"{PCK_SPEC}: SGX extension FMSPC vs TCB Info v3",
                             f"no TCB info for the PCK's FMSPC {ext.fmspc.hex()} (given: "
                             + ", ".join(p[1].fmspc.hex() for p in parsed) + ")")


def _check_policy(quote: TdxQuote, policy: Policy, steps: Steps) -> None:
    """TD report body checks against the caller's policy (steps TDX-16 … TDX-20)."""
    body, tp = quote.body, policy.tdx
    steps.check(tp.allow_debug or not body.debug, "TDX-16",
                "Intel TDX Module ABI: TDATTRIBUTES bit 0 DEBUG",
                "the TD runs with DEBUG on and the policy forbids it")
    steps.check(not tp.require_sept_ve_disable or body.sept_ve_disable, "TDX-16",
                "Intel TDX Module ABI: TDATTRIBUTES bit 28 SEPT_VE_DISABLE",
                "the TD runs without SEPT_VE_DISABLE (EPT violations reach the guest as #VE) and "
                "the policy requires it")
    steps.check(tp.td_attributes is None or tp.td_attributes == body.td_attributes, "TDX-17",
                f"{QUOTE_SPEC}: TD quote body TDATTRIBUTES",
                f"TDATTRIBUTES {body.td_attributes.hex()} differ from the policy's")
    steps.check(tp.xfam is None or tp.xfam == body.xfam, "TDX-17",
                f"{QUOTE_SPEC}: TD quote body XFAM",
                f"XFAM {body.xfam.hex()} differs from the policy's")
    differing = [i for i, want in sorted(tp.rtmrs.items())
                 if not 0 <= i < len(body.rtmrs) or body.rtmrs[i] != want]
    steps.check(not differing, "TDX-18", f"{QUOTE_SPEC}: TD quote body RTMR0..3",
                "RTMR " + ", ".join(map(str, differing)) + " differ from the policy's")
    steps.check(policy.expected_report_data is None
                or policy.expected_report_data == body.report_data, "TDX-19",
                f"{QUOTE_SPEC}: TD quote body REPORTDATA", "report_data differs from expected")
    steps.check(policy.any_measurement or body.mr_td in policy.allowed_measurements, "TDX-20",
                f"{QUOTE_SPEC}: TD quote body MRTD", f"MRTD {body.mr_td.hex()} is not allowed")
