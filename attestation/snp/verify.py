"""Offline verification of SEV-SNP and emulated (SNP-layout) evidence: pure, no I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation.errors import EmulatedEvidenceRefused, MalformedEvidence, VerificationFailed
from attestation.evidence import Platform, VerifiedEvidence
from attestation.policy import Policy
from attestation.snp import certs, tcb
from attestation.snp.report import SIGNED_LENGTH, SnpReport, decode_signature, parse_report
from attestation.steps import Steps

ABI = "SEV-SNP ABI"
VCEK_SPEC = "AMD VCEK certificate spec"
EMULATED_MARKER = "EMULATED — NOT A TEE"
_PRODUCT_OID = "1.3.6.1.4.1.3704.1.2"
_HWID_OID = "1.3.6.1.4.1.3704.1.4"
_KEY_KIND = {0: "VCEK", 1: "VLEK"}


def _parse(data: bytes, steps: Steps, step: str) -> SnpReport:
    try:
        report = parse_report(data)
    except MalformedEvidence as exc:
        raise VerificationFailed(step, f"{ABI} §7.3 ATTESTATION_REPORT", str(exc)) from exc
    steps.passed.append(step)
    return report


def _load(blobs: Sequence[bytes], step: str, spec: str) -> list[x509.Certificate]:
    try:
        return certs.load_certificates(blobs)
    except MalformedEvidence as exc:
        raise VerificationFailed(step, spec, str(exc)) from exc


def _octets(value: bytes) -> bytes:
    """hwID is stored as raw 64 bytes by AMD KDS; accept a DER OCTET STRING wrapper too."""
    if len(value) == 66 and value[:2] == b"\x04\x40":
        return value[2:]
    return value


def _within(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _report_signature_ok(report: bytes, parsed: SnpReport, key: object) -> bool:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return False
    r, s = decode_signature(parsed.signature)
    try:
        key.verify(encode_dss_signature(r, s), report[:SIGNED_LENGTH], ec.ECDSA(hashes.SHA384()))
    except Exception:  # noqa: BLE001 - any failure to verify is a rejection
        return False
    return True


def _check_policy(
    parsed: SnpReport, reported: dict[str, int], policy: Policy, steps: Steps, p: str
) -> None:
    """Report-content checks shared by SNP and emulated verification (steps ``p``-10..16)."""
    sp = policy.snp
    steps.check(
        sp.allow_debug or not parsed.debug,
        f"{p}-10",
        f"{ABI} guest POLICY bit 19",
        "guest policy allows DEBUG and the policy forbids it",
    )
    steps.check(
        sp.allow_smt or not parsed.smt_allowed,
        f"{p}-11",
        f"{ABI} guest POLICY bit 16",
        "guest policy allows SMT and the policy forbids it",
    )
    steps.check(
        sp.allow_migration_agent or not parsed.migrate_ma_allowed,
        f"{p}-11",
        f"{ABI} guest POLICY bit 18",
        "guest policy allows a migration agent",
    )
    steps.check(
        parsed.vmpl <= sp.max_vmpl,
        f"{p}-12",
        f"{ABI} ATTESTATION_REPORT VMPL",
        f"VMPL {parsed.vmpl} > allowed {sp.max_vmpl}",
    )
    for name, minimum in sorted(sp.minimum_tcb.items()):
        have = reported.get(name)
        steps.check(
            have is not None and have >= minimum,
            f"{p}-13",
            f"{ABI} TCB_VERSION",
            f"reported TCB {name}={have} below minimum {minimum}",
        )
    steps.check(
        policy.expected_report_data is None or policy.expected_report_data == parsed.report_data,
        f"{p}-14",
        f"{ABI} ATTESTATION_REPORT REPORT_DATA",
        "report_data differs from expected",
    )
    steps.check(
        policy.any_measurement or parsed.measurement in policy.allowed_measurements,
        f"{p}-15",
        f"{ABI} ATTESTATION_REPORT MEASUREMENT",
        f"measurement {parsed.measurement.hex()} is not allowed",
    )
    steps.check(
        sp.host_data is None or sp.host_data == parsed.host_data,
        f"{p}-16",
        f"{ABI} ATTESTATION_REPORT HOST_DATA",
        "host_data differs from expected",
    )
    steps.check(
        sp.id_key_digest is None or sp.id_key_digest == parsed.id_key_digest,
        f"{p}-16",
        f"{ABI} ATTESTATION_REPORT ID_KEY_DIGEST",
        "id_key_digest differs from expected",
    )


def _result(
    platform: Platform,
    parsed: SnpReport,
    reported: dict[str, int],
    steps: Steps,
    details: dict[str, str],
) -> VerifiedEvidence:
    return VerifiedEvidence(
        platform=platform,
        measurement=parsed.measurement,
        report_data=parsed.report_data,
        tcb=dict(reported),
        debug=parsed.debug,
        steps=tuple(steps.passed),
        details=details,
    )


def _check_crls(crls: Sequence[bytes], product: str, kind: str, ark: x509.Certificate,
                ask: x509.Certificate, leaf: x509.Certificate, policy: Policy, now: datetime,
                steps: Steps) -> None:
    """SNP-17: the AMD KDS CRL of this product (ARK-signed) is current and revokes neither the
    ASK/ASVK nor the leaf; with no CRL for this ARK, pass unless the policy requires one."""
    step = "SNP-17"
    spec = f"AMD KDS /{kind.lower()}/v1/{product}/crl (ARK-signed); RFC 5280 §5"
    try:
        parsed = [certs.load_crl(blob) for blob in crls]
    except MalformedEvidence as exc:
        raise VerificationFailed(step, spec, str(exc)) from exc
    mine = [crl for crl in parsed if crl.issuer == ark.subject]
    steps.check(bool(mine) or not policy.snp.require_crl, step, f"{spec}; policy snp.require_crl",
                f"no CRL issued by ARK-{product} was supplied and the policy requires one")
    for crl in mine:
        steps.check(certs.crl_signed_by(crl, ark), step, spec,
                    f"the {product} CRL signature does not verify with ARK-{product} "
                    "(RSA-PSS SHA-384, salt 48)")
        nxt = crl.next_update_utc
        steps.check(nxt is not None and crl.last_update_utc <= now <= nxt, step, spec,
                    f"the {product} CRL is not current at {now.isoformat()} (valid "
                    f"{crl.last_update_utc} … {nxt})")
        for name, cert in (("ASK" if kind == "VCEK" else "ASVK", ask), (kind, leaf)):
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            steps.check(entry is None, step, f"{spec}: revocation",
                        f"the {product} {name} (serial {cert.serial_number:x}) is revoked since "
                        f"{entry and entry.revocation_date_utc}")


def verify_snp(
    report: bytes, certificates: Sequence[bytes], policy: Policy, now: datetime,
    *, crls: Sequence[bytes] = (),
) -> VerifiedEvidence:
    """Verify an SEV-SNP report against its VCEK/VLEK chain ending in a pinned AMD ARK.

    ``crls`` are AMD KDS CRLs (DER or PEM, any product); the one issued by the chain's ARK is
    checked (SNP-17), and ``policy.snp.require_crl`` makes it mandatory.
    """
    return _verify_snp(report, certificates, policy, now, crls, certs.ARK_SHA256,
                       certs.ASK_SHA256)


def _verify_snp(
    report: bytes, certificates: Sequence[bytes], policy: Policy, now: datetime,
    crls: Sequence[bytes], ark_pins: Mapping[str, str], ask_pins: Mapping[tuple[str, str], str],
) -> VerifiedEvidence:
    """:func:`verify_snp` with the trust anchors as parameters (tests use their own ARK)."""
    steps = Steps()
    parsed = _parse(report, steps, "SNP-1")
    chain_spec = f"{VCEK_SPEC} / AMD KDS cert chain"
    pool = _load(certificates, "SNP-2", chain_spec)
    by_fp = {certs.sha256_fingerprint(c): c for c in pool}
    arks = [(p, by_fp[fp]) for p, fp in ark_pins.items() if fp in by_fp]
    steps.check(
        len(arks) == 1,
        "SNP-2",
        "AMD ARK is a pinned root",
        "no pinned AMD ARK among the certificates" if not arks else "several ARKs given",
    )
    product, ark = arks[0]
    kind = _KEY_KIND.get(parsed.signing_key)
    steps.check(
        kind is not None,
        "SNP-3",
        f"{ABI} SIGNING_KEY",
        f"report SIGNING_KEY {parsed.signing_key} names no certified key",
    )
    assert kind is not None
    steps.check(
        kind == "VCEK" or not policy.snp.require_vcek,
        "SNP-3",
        f"{ABI} SIGNING_KEY",
        "policy requires a VCEK-signed report",
    )
    ask = by_fp.get(ask_pins[(product, kind)])
    steps.check(
        ask is not None and certs.signed_by(ask, ark),
        "SNP-3",
        f"{chain_spec}: {'ASK' if kind == 'VCEK' else 'ASVK'} signed by ARK "
        "(RSA-PSS SHA-384, salt 48)",
        f"no pinned {product} {kind} intermediate signed by ARK-{product}",
    )
    assert ask is not None
    leaves = [c for c in pool if c is not ask and c is not ark and certs.signed_by(c, ask)]
    steps.check(
        len(leaves) == 1,
        "SNP-4",
        f"{chain_spec}: {kind} signed by ASK/ASVK",
        f"expected exactly one {kind} signed by {ask.subject.rfc4514_string()}",
    )
    leaf = leaves[0]
    for name, cert in (("ARK", ark), ("ASK", ask), (kind, leaf)):
        steps.check(
            _within(cert, now),
            "SNP-5",
            "RFC 5280 §4.1.2.5 validity",
            f"{name} not valid at {now.isoformat()}",
        )
    _check_crls(crls, product, kind, ark, ask, leaf, policy, steps=steps, now=now)
    leaf_product = certs.extension_bytes(leaf, _PRODUCT_OID)
    leaf_name = certs.der_string(leaf_product) if leaf_product else ""
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    steps.check(
        bool(cn) and cn[0].value == f"SEV-{kind}",
        "SNP-6",
        f"{VCEK_SPEC} subject",
        f"leaf is not a {kind} certificate",
    )
    steps.check(
        leaf_name == "" or leaf_name.split("-")[0] == product,
        "SNP-6",
        f"{VCEK_SPEC} productName 1.3.6.1.4.1.3704.1.2",
        f"{kind} product {leaf_name!r} does not match the {product} chain",
    )
    steps.check(
        _report_signature_ok(report, parsed, leaf.public_key()),
        "SNP-7",
        f"{ABI} §7.3 SIGNATURE (ECDSA P-384 SHA-384 over 0..0x2A0)",
        f"report signature does not verify with the {kind} key",
    )
    reported = tcb.decode_tcb(parsed.reported_tcb, product)
    for name in reported:
        raw = certs.extension_bytes(leaf, tcb.VCEK_TCB_OIDS[name])
        if raw is None:
            continue
        steps.check(
            certs.der_integer(raw) == reported[name],
            "SNP-8",
            f"{VCEK_SPEC} TCB extension {tcb.VCEK_TCB_OIDS[name]}",
            f"{kind} certifies {name}={certs.der_integer(raw)}, report says {reported[name]}",
        )
    if kind == "VCEK":
        hwid = certs.extension_bytes(leaf, _HWID_OID)
        hw = _octets(hwid or b"")
        steps.check(
            hw == parsed.chip_id,
            "SNP-9",
            f"{VCEK_SPEC} hwID 1.3.6.1.4.1.3704.1.4",
            "VCEK hwID differs from the report's CHIP_ID",
        )
    _check_policy(parsed, reported, policy, steps, "SNP")
    return _result(
        Platform.SEV_SNP, parsed, reported, steps, {"product": product, "signing_key": kind}
    )


def verify_emulated(
    report: bytes,
    certificates: Sequence[bytes],
    policy: Policy,
    now: datetime,
    *,
    allow_emulated: bool = False,
    expected_root_sha256: bytes | None = None,
) -> VerifiedEvidence:
    """Verify emulated evidence (SNP-layout report, ECDSA P-384 root + leaf named as emulated)."""
    if not allow_emulated:
        raise EmulatedEvidenceRefused(
            "EMU-0",
            "emulated evidence is opt-in",
            "emulated evidence is refused unless the verifier is explicitly told to accept it",
        )
    steps = Steps()
    steps.passed.append("EMU-0")
    parsed = _parse(report, steps, "EMU-1")
    pool = _load(certificates, "EMU-2", "emulated chain")
    for cert in pool:
        names = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string())
        steps.check(
            all(EMULATED_MARKER in n for n in names),
            "EMU-2",
            "DESIGN §5.7 naming",
            f"certificate name lacks {EMULATED_MARKER!r}: {names[0]}",
        )
    roots = [c for c in pool if c.subject == c.issuer and certs.signed_by(c, c)]
    steps.check(
        len(roots) == 1,
        "EMU-3",
        "emulated chain: one self-signed ECDSA P-384 root",
        f"found {len(roots)} self-signed roots",
    )
    root = roots[0]
    steps.check(
        expected_root_sha256 is None
        or certs.sha256_fingerprint(root) == expected_root_sha256.hex(),
        "EMU-4",
        "emulated root pin (SHA-256 of DER)",
        "emulated root is not the pinned one",
    )
    leaves = [c for c in pool if c is not root and certs.signed_by(c, root)]
    steps.check(
        len(leaves) == 1,
        "EMU-5",
        "emulated chain: leaf signed by root",
        f"expected exactly one leaf signed by the root, found {len(leaves)}",
    )
    leaf = leaves[0]
    for cert in (root, leaf):
        steps.check(
            _within(cert, now),
            "EMU-6",
            "RFC 5280 §4.1.2.5 validity",
            f"{cert.subject.rfc4514_string()} not valid at {now.isoformat()}",
        )
    steps.check(
        _report_signature_ok(report, parsed, leaf.public_key()),
        "EMU-7",
        f"{ABI} §7.3 SIGNATURE (ECDSA P-384 SHA-384 over 0..0x2A0)",
        "report signature does not verify with the emulated leaf key",
    )
    reported = tcb.decode_tcb(parsed.reported_tcb, "Milan")
    _check_policy(parsed, reported, policy, steps, "EMU")
    return _result(
        Platform.EMULATED, parsed, reported, steps, {"root_sha256": certs.sha256_fingerprint(root)}
    )
