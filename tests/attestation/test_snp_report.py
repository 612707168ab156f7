"""SNP report parsing and encoding."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import MalformedEvidence
from attestation.snp.report import (
    REPORT_SIZE,
    decode_signature,
    encode_report,
    encode_signature,
    parse_report,
)


def _real(vectors: Path) -> bytes:
    return (vectors / "sev-snp" / "attestation.bin").read_bytes()


def test_real_report_round_trips(vectors: Path) -> None:
    raw = _real(vectors)
    report = parse_report(raw)
    assert report.version == 2
    assert report.signing_key == 0
    assert encode_report(report) == raw


@pytest.mark.parametrize("version", [3, 5])
def test_newer_versions_round_trip(vectors: Path, version: int) -> None:
    report = dataclasses.replace(
        parse_report(_real(vectors)),
        version=version,
        cpuid_fam_id=0x19,
        cpuid_mod_id=1,
        cpuid_step=1,
        launch_mit_vector=5 if version == 5 else 0,
        current_mit_vector=7 if version == 5 else 0,
    )
    assert parse_report(encode_report(report)) == report


@pytest.mark.parametrize("size", [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1, 2 * REPORT_SIZE])
def test_wrong_size_rejected(vectors: Path, size: int) -> None:
    raw = (_real(vectors) * 2)[:size]
    with pytest.raises(MalformedEvidence, match="expected exactly"):
        parse_report(raw)


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, 4), (0, 1), (0x34, 2), (0x4C, 1), (0x190, 1), (0x29F, 1), (0x2A0 + 144, 1)],
)
def test_bad_version_algo_reserved_rejected(vectors: Path, offset: int, value: int) -> None:
    raw = bytearray(_real(vectors))
    raw[offset] = value
    with pytest.raises(MalformedEvidence):
        parse_report(bytes(raw))


def test_signature_encoding_round_trips() -> None:
    r, s = 2**383 + 12345, 2**380 + 7
    sig = encode_signature(r, s)
    assert len(sig) == 512
    assert decode_signature(sig) == (r, s)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=1300))
def test_parse_never_escapes_untyped(data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        parse_report(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_parse_full_size_noise(data: bytes) -> None:
    try:
        report = parse_report(data)
    except MalformedEvidence:
        return
    assert encode_report(report) == data
