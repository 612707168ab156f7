"""Emulated (SNP-layout) evidence: refused by default, verified only when explicitly allowed."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.errors import EmulatedEvidenceRefused, VerificationFailed
from attestation.evidence import Platform
from attestation.policy import Policy
from attestation.snp.report import (
    SIGNED_LENGTH,
    SnpReport,
    encode_report,
    encode_signature,
    parse_report,
)
from attestation.snp.verify import EMULATED_MARKER, verify_emulated

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MEASUREMENT = bytes(range(48))
REPORT_DATA = hashlib.sha512(b"nonce").digest()
POLICY = Policy(allowed_measurements=frozenset({MEASUREMENT}), expected_report_data=REPORT_DATA)


def _cert(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    issuer_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, issuer)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(signer, hashes.SHA384())
    )


def _chain(
    root_cn: str = f"Root {EMULATED_MARKER}", leaf_cn: str = f"VCEK {EMULATED_MARKER}"
) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
    root_key = ec.generate_private_key(ec.SECP384R1())
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert(root_cn, root_key, root_cn, root_key)
    return leaf_key, [root, _cert(leaf_cn, leaf_key, root_cn, root_key)]


def _report(key: ec.EllipticCurvePrivateKey, version: int = 2, debug: bool = False) -> bytes:
    unsigned = SnpReport(
        version=version,
        guest_svn=0,
        policy=(1 << 17) | (1 << 16) | (debug << 19),
        family_id=bytes(16),
        image_id=bytes(16),
        vmpl=0,
        signature_algo=1,
        current_tcb=0,
        platform_info=0,
        signer_info=0,
        report_data=REPORT_DATA,
        measurement=MEASUREMENT,
        host_data=bytes(32),
        id_key_digest=bytes(48),
        author_key_digest=bytes(48),
        report_id=bytes(32),
        report_id_ma=bytes(32),
        reported_tcb=0,
        chip_id=bytes(64),
        committed_tcb=0,
        current_build=0,
        current_minor=0,
        current_major=1,
        committed_build=0,
        committed_minor=0,
        committed_major=1,
        launch_tcb=0,
        signature=bytes(512),
        cpuid_fam_id=0x19 if version >= 3 else 0,
        cpuid_mod_id=0x11 if version >= 3 else 0,
        cpuid_step=1 if version >= 3 else 0,
        launch_mit_vector=3 if version >= 5 else 0,
        current_mit_vector=3 if version >= 5 else 0,
    )
    body = encode_report(unsigned)[:SIGNED_LENGTH]
    r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA384())))
    raw = body + encode_signature(r, s)
    assert encode_report(parse_report(raw)) == raw
    return raw


def _pem(certs: list[x509.Certificate]) -> list[bytes]:
    return [b"".join(c.public_bytes(Encoding.PEM) for c in certs)]


@pytest.mark.parametrize("version", [2, 3, 5])
def test_round_trip_verifies_when_allowed(version: int) -> None:
    key, chain = _chain()
    raw = _report(key, version)
    root_pin = hashlib.sha256(chain[0].public_bytes(Encoding.DER)).digest()
    result = verify_emulated(
        raw, _pem(chain), POLICY, NOW, allow_emulated=True, expected_root_sha256=root_pin
    )
    assert result.platform is Platform.EMULATED
    assert result.measurement == MEASUREMENT
    assert result.steps[0] == "EMU-0"


def test_refused_without_allow() -> None:
    key, chain = _chain()
    with pytest.raises(EmulatedEvidenceRefused, match="explicitly"):
        verify_emulated(_report(key), _pem(chain), POLICY, NOW)


@pytest.mark.parametrize(
    ("root_cn", "leaf_cn"), [("Root EMULATED - NOT A TEE", None), (None, "VCEK")]
)
def test_name_without_marker_rejected(root_cn: str | None, leaf_cn: str | None) -> None:
    key, chain = _chain(root_cn or f"Root {EMULATED_MARKER}", leaf_cn or f"VCEK {EMULATED_MARKER}")
    with pytest.raises(VerificationFailed) as info:
        verify_emulated(_report(key), _pem(chain), POLICY, NOW, allow_emulated=True)
    assert info.value.step == "EMU-2"


def test_wrong_root_pin_and_foreign_key_rejected() -> None:
    key, chain = _chain()
    with pytest.raises(VerificationFailed) as info:
        verify_emulated(
            _report(key),
            _pem(chain),
            POLICY,
            NOW,
            allow_emulated=True,
            expected_root_sha256=bytes(32),
        )
    assert info.value.step == "EMU-4"
    other, _ = _chain()
    with pytest.raises(VerificationFailed) as info:
        verify_emulated(_report(other), _pem(chain), POLICY, NOW, allow_emulated=True)
    assert info.value.step == "EMU-7"


def test_policy_checks_shared_with_snp() -> None:
    key, chain = _chain()
    with pytest.raises(VerificationFailed) as info:
        verify_emulated(_report(key, debug=True), _pem(chain), POLICY, NOW, allow_emulated=True)
    assert info.value.step == "EMU-10"
    with pytest.raises(VerificationFailed) as info:
        verify_emulated(
            _report(key),
            _pem(chain),
            Policy(allowed_measurements=frozenset({bytes(48)})),
            NOW,
            allow_emulated=True,
        )
    assert info.value.step == "EMU-15"
