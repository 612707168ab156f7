"""SEV-SNP verification against the real Milan vector and AMD roots."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import AttestationError, MalformedEvidence, VerificationFailed
from attestation.policy import Policy, SnpPolicy
from attestation.snp.certs import ARK_SHA256, load_certificates, sha256_fingerprint
from attestation.snp.report import SIGNED_LENGTH, parse_report
from attestation.snp.verify import verify_snp

NOW = datetime(2025, 1, 1, tzinfo=UTC)
LENIENT = Policy(any_measurement=True, snp=SnpPolicy(allow_debug=True))


def _snp(vectors: Path) -> Path:
    return vectors / "sev-snp"


def _report(vectors: Path) -> bytes:
    return (_snp(vectors) / "attestation.bin").read_bytes()


def _chain(vectors: Path, roots: str = "ask_ark_milan.pem") -> list[bytes]:
    snp = _snp(vectors)
    return [(snp / "vcek.testcer").read_bytes(), (snp / "amd-roots" / roots).read_bytes()]


def _fails(
    vectors: Path,
    step: str,
    report: bytes | None = None,
    chain: list[bytes] | None = None,
    policy: Policy = LENIENT,
    now: datetime = NOW,
) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        verify_snp(report or _report(vectors), chain or _chain(vectors), policy, now)
    assert info.value.step == step, str(info.value)
    return info.value


def test_real_report_verifies(vectors: Path) -> None:
    result = verify_snp(_report(vectors), _chain(vectors), LENIENT, NOW)
    assert result.details["product"] == "Milan"
    assert result.details["signing_key"] == "VCEK"
    assert result.tcb == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 0x44}
    assert result.steps[0] == "SNP-1" and "SNP-7" in result.steps and "SNP-9" in result.steps


def test_chain_order_does_not_matter(vectors: Path) -> None:
    snp = _snp(vectors)
    ask, ark = load_certificates([(snp / "amd-roots" / "ask_ark_milan.pem").read_bytes()])
    blobs = [
        ark.public_bytes(Encoding.PEM),
        (snp / "vcek.testcer").read_bytes(),
        ask.public_bytes(Encoding.DER),
    ]
    assert verify_snp(_report(vectors), blobs, LENIENT, NOW).details["product"] == "Milan"


def test_pinned_arks_match_vectors(vectors: Path) -> None:
    for product in ARK_SHA256:
        pem = (_snp(vectors) / "amd-roots" / f"ask_ark_{product.lower()}_vlek.pem").read_bytes()
        assert sha256_fingerprint(load_certificates([pem])[1]) == ARK_SHA256[product]


def _flip_positions() -> list[int]:
    signed = [byte * 8 + byte % 8 for byte in range(SIGNED_LENGTH)]
    sig = [(SIGNED_LENGTH + byte) * 8 + (byte * 3) % 8 for byte in range(144)]
    return signed + sig


def test_every_sampled_bit_flip_is_rejected(vectors: Path) -> None:
    raw = _report(vectors)
    chain = _chain(vectors)
    for bit in _flip_positions():
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(VerificationFailed) as info:
            verify_snp(bytes(flipped), chain, LENIENT, NOW)
        allowed = {"SNP-1", "SNP-7"} | ({"SNP-3"} if bit // 8 == 0x48 else set())
        assert info.value.step in allowed, (hex(bit // 8), str(info.value))


def test_signature_padding_flip_rejected_at_parse(vectors: Path) -> None:
    raw = bytearray(_report(vectors))
    raw[SIGNED_LENGTH + 200] ^= 1
    _fails(vectors, "SNP-1", report=bytes(raw))


@pytest.mark.parametrize("size", [0, 100, 0x4A0 - 1, 0x4A0 + 1])
def test_truncated_and_oversized_rejected_at_parse(vectors: Path, size: int) -> None:
    _fails(vectors, "SNP-1", report=(_report(vectors) * 2)[:size] or b"\0")


def test_missing_ark_rejected(vectors: Path) -> None:
    ask = load_certificates([(_snp(vectors) / "amd-roots" / "ask_ark_milan.pem").read_bytes()])[0]
    chain = [(_snp(vectors) / "vcek.testcer").read_bytes(), ask.public_bytes(Encoding.DER)]
    _fails(vectors, "SNP-2", chain=chain)


def test_vlek_chain_for_vcek_rejected(vectors: Path) -> None:
    _fails(vectors, "SNP-3", chain=_chain(vectors, "ask_ark_milan_vlek.pem"))


@pytest.mark.parametrize("roots", ["ask_ark_genoa.pem", "ask_ark_turin_vcek.pem"])
def test_wrong_product_chain_rejected(vectors: Path, roots: str) -> None:
    _fails(vectors, "SNP-4", chain=_chain(vectors, roots))


@pytest.mark.parametrize(
    "now", [datetime(2030, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)]
)
def test_outside_validity_rejected(vectors: Path, now: datetime) -> None:
    _fails(vectors, "SNP-5", now=now)


def test_debug_refused_by_default(vectors: Path) -> None:
    assert parse_report(_report(vectors)).debug
    _fails(vectors, "SNP-10", policy=Policy(any_measurement=True))


def test_tcb_below_minimum(vectors: Path) -> None:
    policy = dataclasses.replace(LENIENT, snp=SnpPolicy(allow_debug=True, minimum_tcb={"snp": 6}))
    _fails(vectors, "SNP-13", policy=policy)
    ok = dataclasses.replace(LENIENT, snp=SnpPolicy(allow_debug=True, minimum_tcb={"snp": 5}))
    verify_snp(_report(vectors), _chain(vectors), ok, NOW)


def test_report_data_mismatch(vectors: Path) -> None:
    _fails(vectors, "SNP-14", policy=dataclasses.replace(LENIENT, expected_report_data=bytes(64)))


def test_measurement_allow_list(vectors: Path) -> None:
    measurement = parse_report(_report(vectors)).measurement
    policy = Policy(allowed_measurements=frozenset({bytes(48)}), snp=SnpPolicy(allow_debug=True))
    _fails(vectors, "SNP-15", policy=policy)
    good = dataclasses.replace(policy, allowed_measurements=frozenset({measurement}))
    assert verify_snp(_report(vectors), _chain(vectors), good, NOW).measurement == measurement


def test_host_data_and_vmpl(vectors: Path) -> None:
    policy = dataclasses.replace(LENIENT, snp=SnpPolicy(allow_debug=True, host_data=b"\1" * 32))
    _fails(vectors, "SNP-16", policy=policy)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=3))
def test_cert_parsing_only_typed_errors(blobs: list[bytes]) -> None:
    with contextlib.suppress(MalformedEvidence):
        load_certificates(blobs)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=255))
def test_mutated_certificate_only_typed_errors(vectors: Path, index: int, value: int) -> None:
    der = bytearray((_snp(vectors) / "vcek.testcer").read_bytes())
    der[index % len(der)] = value
    chain = [bytes(der), (_snp(vectors) / "amd-roots" / "ask_ark_milan.pem").read_bytes()]
    with contextlib.suppress(AttestationError):
        verify_snp(_report(vectors), chain, LENIENT, NOW)
