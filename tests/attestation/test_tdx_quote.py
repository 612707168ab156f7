"""The TDX quote parser against the real go-tdx-guest Sapphire Rapids quote."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from attestation.errors import MalformedEvidence
from attestation.tdx.quote import HEADER_SIZE, TD_REPORT10_SIZE, parse_quote
from tests.support.tdx_pki import signed_quote_length

SIGNED_END = HEADER_SIZE + TD_REPORT10_SIZE
TRAILER = b"\nextra bytes(only for testing purpose)\n"


def raw_file(vectors: Path) -> bytes:
    """The vector exactly as go-tdx-guest ships it (with a test-only trailer)."""
    return (vectors / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes()


def real_quote(vectors: Path) -> bytes:
    """The quote itself: the file up to where its signature data length says it ends."""
    data = raw_file(vectors)
    return data[:signed_quote_length(data)]


def test_real_quote_fields(vectors: Path) -> None:
    q = parse_quote(real_quote(vectors))
    assert (q.header.version, q.header.att_key_type, q.header.tee_type) == (4, 2, 0x81)
    assert q.body.tee_tcb_svn.hex() == "03000400000000000000000000000000"
    assert q.body.mr_td.hex().startswith("6363b8043668a3ad") and not q.body.debug
    assert q.body.td_attributes.hex() == "0000004000000000"
    assert q.body.xfam.hex() == "e71a060000000000"
    assert (q.qe_report.isv_prod_id, q.qe_report.isv_svn) == (2, 4)
    assert len(q.qe_auth_data) == 32 and q.pck_chain_pem.count(b"BEGIN CERTIFICATE") == 3
    assert q.signed == real_quote(vectors)[:SIGNED_END]


def test_the_shipped_file_has_a_trailer_that_is_counted_not_parsed(vectors: Path) -> None:
    assert raw_file(vectors) == real_quote(vectors) + TRAILER
    padded, exact = parse_quote(raw_file(vectors)), parse_quote(real_quote(vectors))
    assert (padded.trailing_bytes, exact.trailing_bytes) == (39, 0)
    assert padded == dataclasses.replace(exact, trailing_bytes=39)


def test_dcap_qvl_sample_has_70_trailing_bytes(vectors: Path) -> None:
    raw = (vectors / "tdx-dcap-qvl" / "tdx_quote").read_bytes()
    quote = parse_quote(raw)
    assert (len(raw), quote.trailing_bytes, signed_quote_length(raw)) == (5006, 70, 4936)
    assert quote.body.mr_td.hex().startswith("91eb2b44d141d4ec")


def test_every_truncation_is_malformed(vectors: Path) -> None:
    quote = real_quote(vectors)
    for size in [*range(0, SIGNED_END + 8), *range(SIGNED_END + 8, len(quote), 7)]:
        with pytest.raises(MalformedEvidence):
            parse_quote(quote[:size])


@pytest.mark.parametrize("extra", [b"\0", b"\xff" * 64, b"-----BEGIN CERTIFICATE-----"])
def test_bytes_after_the_signature_data_are_counted(vectors: Path, extra: bytes) -> None:
    quote = parse_quote(real_quote(vectors) + extra)
    assert quote.trailing_bytes == len(extra)
    assert quote.pck_chain_pem == parse_quote(real_quote(vectors)).pck_chain_pem


def _patch(data: bytes, offset: int, fmt: str, delta: int) -> bytes:
    (value,) = struct.unpack_from(fmt, data, offset)
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value + delta)
    return bytes(out)


@pytest.mark.parametrize(("offset", "fmt"), [
    (SIGNED_END, "<I"),                       # signature data length
    (SIGNED_END + 4 + 130, "<I"),             # certification data size
    (SIGNED_END + 4 + 134 + 448, "<H"),       # QE auth data size
    (SIGNED_END + 4 + 134 + 450 + 32 + 2, "<I"),  # PCK chain size
])
@pytest.mark.parametrize("delta", [-1, 1])
def test_inconsistent_lengths_are_malformed(vectors: Path, offset: int, fmt: str,
                                            delta: int) -> None:
    with pytest.raises(MalformedEvidence):
        parse_quote(_patch(real_quote(vectors), offset, fmt, delta))


@pytest.mark.parametrize(("offset", "fmt", "value", "message"), [
    (0, "<H", 3, "version"),
    (2, "<H", 3, "attestation key type"),
    (4, "<I", 0, "TEE type"),
    (SIGNED_END + 4 + 128, "<H", 5, "certification data type"),
    (SIGNED_END + 4 + 134 + 450 + 32, "<H", 4, "inner certification data type"),
])
def test_unsupported_fields_are_malformed(vectors: Path, offset: int, fmt: str, value: int,
                                          message: str) -> None:
    data = bytearray(real_quote(vectors))
    struct.pack_into(fmt, data, offset, value)
    with pytest.raises(MalformedEvidence, match=message):
        parse_quote(bytes(data))


def _as_v5(quote: bytes, body_type: int, body_extra: bytes = b"") -> bytes:
    body = quote[HEADER_SIZE:SIGNED_END] + body_extra
    header = struct.pack("<H", 5) + quote[2:HEADER_SIZE]
    return header + struct.pack("<HI", body_type, len(body)) + body + quote[SIGNED_END:]


def test_v5_layouts(vectors: Path) -> None:
    quote = real_quote(vectors)
    v5 = parse_quote(_as_v5(quote, 2))
    assert v5.header.version == 5 and v5.body_type == 2 and v5.body.mr_td == parse_quote(
        quote).body.mr_td
    assert len(v5.signed) == SIGNED_END + 6
    v15 = parse_quote(_as_v5(quote, 3, b"\x07" * 16 + b"\x08" * 48))
    assert v15.body.tee_tcb_svn2 == b"\x07" * 16 and v15.body.mr_service_td == b"\x08" * 48
    for body_type, extra in ((1, b""), (3, b""), (2, b"\0")):
        with pytest.raises(MalformedEvidence, match="body"):
            parse_quote(_as_v5(quote, body_type, extra))
