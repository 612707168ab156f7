"""TDX verification of the real Sapphire Rapids quote against the real Intel PCS collateral.

The file as shipped carries 39 unsigned bytes after the signature data; they are counted, reported
as a warning and otherwise ignored. With ``now`` = 2023-06-20 every certificate, CRL and
collateral window holds and steps TDX-1 … TDX-13 pass; the sample TCB info (FMSPC 50806f000000,
evaluation data 15) lists only TCB levels above this platform (PCK SGX component 1 is 3 < 5,
TEE_TCB_SVN[2] is 4 < 5), so the real quote is rejected at TDX-14, "TCB not supported", as
go-tdx-guest's own tests note for this pair.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from attestation.errors import CollateralError, VerificationFailed
from attestation.policy import Policy, TdxPolicy
from attestation.tdx.collateral import TdxCollateral
from attestation.tdx.files import load_collateral_dir
from attestation.tdx.quote import HEADER_SIZE, TD_REPORT10_SIZE
from attestation.tdx.verify import verify_tdx
from tests.attestation.test_tdx_quote import raw_file, real_quote

NOW = datetime(2023, 6, 20, tzinfo=UTC)
ANY = Policy(any_measurement=True)
SIGNED_END = HEADER_SIZE + TD_REPORT10_SIZE
SIG = SIGNED_END + 4
ATT_KEY = SIG + 64
QE_REPORT = SIG + 134
QE_REPORT_SIG = QE_REPORT + 384
QE_AUTH = QE_REPORT_SIG + 64 + 2
PARSED_HEADER = set(range(8))  # version, key type, TEE type: they decide the layout


@pytest.fixture(scope="module")
def collateral(vectors: Path) -> TdxCollateral:
    return load_collateral_dir(vectors / "tdx")


def _fails(vectors: Path, collateral: TdxCollateral, step: str, quote: bytes | None = None,
           now: datetime = NOW, policy: Policy = ANY) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        verify_tdx(quote or real_quote(vectors), collateral, policy, now)
    assert info.value.step == step, str(info.value)
    return info.value


def test_real_quote_passes_to_tdx_13_and_stops_at_tcb_levels(
        vectors: Path, collateral: TdxCollateral) -> None:
    failure = _fails(vectors, collateral, "TDX-14")
    assert "TCB not supported" in failure.reason
    assert "03030202020100020000000000000000" in failure.reason
    assert "TEE_TCB_SVN 03000400000000000000000000000000" in failure.reason


def test_the_shipped_file_reaches_tcb_levels_with_a_warning(
        vectors: Path, collateral: TdxCollateral) -> None:
    failure = _fails(vectors, collateral, "TDX-14", raw_file(vectors))
    assert failure.reason == _fails(vectors, collateral, "TDX-14").reason
    assert failure.warnings == ("39 unsigned bytes after the quote's signature data were ignored "
                                "(covered by no signature)",)
    assert "SGX component 1 is 3 < 5" in failure.reason
    assert "TEE_TCB_SVN[2] is 4 < 5" in failure.reason


def test_a_policy_may_refuse_trailing_bytes(vectors: Path, collateral: TdxCollateral) -> None:
    strict = Policy(any_measurement=True, tdx=TdxPolicy(allow_trailing_bytes=False))
    assert "39 unsigned bytes" in _fails(vectors, collateral, "TDX-1", raw_file(vectors),
                                         policy=strict).reason
    _fails(vectors, collateral, "TDX-14", policy=strict)  # the exact quote is not affected


def _flip(data: bytes, byte: int, bit: int) -> bytes:
    out = bytearray(data)
    out[byte] ^= 1 << bit
    return bytes(out)


def _expected_step(byte: int) -> str:
    if byte < HEADER_SIZE and byte in PARSED_HEADER:
        return "TDX-1"
    if byte < SIG + 64:
        return "TDX-7"  # header, TD report body, quote signature
    if byte < QE_REPORT:
        return "TDX-6"  # attestation key: the QE report no longer binds it
    if byte < QE_REPORT_SIG + 64:
        return "TDX-5"  # QE report and its signature
    return "TDX-6"  # QE auth data


def test_single_bit_flips_in_signed_fields_fail_at_their_step(
        vectors: Path, collateral: TdxCollateral) -> None:
    quote = raw_file(vectors)  # as shipped, trailer included
    positions = [*range(0, SIGNED_END), *range(SIG, SIG + 128),
                 *range(QE_REPORT, QE_REPORT_SIG + 64), *range(QE_AUTH, QE_AUTH + 32)]
    for byte in positions:
        bit = (byte * 5) % 8
        flipped = _flip(quote, byte, bit)
        want = _expected_step(byte)
        with pytest.raises(VerificationFailed) as info:
            verify_tdx(flipped, collateral, ANY, NOW)
        assert info.value.step == want, (byte, bit, str(info.value))


def test_flips_in_the_trailer_change_nothing(vectors: Path, collateral: TdxCollateral) -> None:
    quote = raw_file(vectors)
    expected = _fails(vectors, collateral, "TDX-14", quote).reason
    for byte in range(len(real_quote(vectors)), len(quote)):
        assert _fails(vectors, collateral, "TDX-14", _flip(quote, byte, byte % 8)).reason \
            == expected


def _pem_chain(vectors: Path) -> list[bytes]:
    pem = real_quote(vectors)[QE_AUTH + 32 + 6:]
    return [b"-----BEGIN" + part for part in pem.split(b"-----BEGIN")[1:]]


def _with_chain(vectors: Path, chain: bytes) -> bytes:
    quote = real_quote(vectors)
    head = quote[:QE_AUTH + 32]
    inner = struct.pack("<HI", 5, len(chain)) + chain
    cert_size = 384 + 64 + 2 + 32 + len(inner)
    sig_data = quote[SIG:SIG + 128] + struct.pack("<HI", 6, cert_size) + head[QE_REPORT:] + inner
    return quote[:SIGNED_END] + struct.pack("<I", len(sig_data)) + sig_data


def test_pck_chain_order_is_free_but_content_is_not(vectors: Path,
                                                    collateral: TdxCollateral) -> None:
    leaf, ca, root = _pem_chain(vectors)
    _fails(vectors, collateral, "TDX-14", _with_chain(vectors, root + leaf + ca))
    _fails(vectors, collateral, "TDX-14", _with_chain(vectors, leaf + ca))  # root from collateral
    no_ca = _with_chain(vectors, leaf + root)
    assert "PCK CA" in _fails(vectors, collateral, "TDX-2", no_ca).reason
    no_root = dataclasses.replace(collateral, root_ca=b"")
    assert "pinned" in _fails(vectors, no_root, "TDX-2", _with_chain(vectors, leaf + ca)).reason
    signing = (vectors / "tdx" / "tcb-info-issuer-chain.pem").read_bytes()
    _fails(vectors, collateral, "TDX-2", _with_chain(vectors, signing + leaf))
    _fails(vectors, collateral, "TDX-2", _with_chain(vectors, b"-----BEGIN CERTIFICATE-----\n"))


def test_wrong_root_ca_in_collateral(vectors: Path, collateral: TdxCollateral) -> None:
    wrong = dataclasses.replace(collateral, root_ca=_pem_chain(vectors)[1])
    assert "pinned" in _fails(vectors, wrong, "TDX-2").reason


def test_swapped_collateral_pieces(vectors: Path, collateral: TdxCollateral) -> None:
    swapped = dataclasses.replace(collateral, pck_crl=collateral.root_crl,
                                  root_crl=collateral.pck_crl)
    assert "issued by" in _fails(vectors, swapped, "TDX-4").reason
    pck_chain = collateral.pck_crl_issuer_chain
    _fails(vectors, dataclasses.replace(collateral, qe_identity_issuer_chain=pck_chain), "TDX-8")
    _fails(vectors, dataclasses.replace(collateral, tcb_info_issuer_chain=pck_chain), "TDX-9")
    signing_chain = collateral.tcb_info_issuer_chain
    _fails(vectors, dataclasses.replace(collateral, pck_crl_issuer_chain=signing_chain), "TDX-4")


@pytest.mark.parametrize(("now", "step", "what"), [
    (datetime(2029, 9, 21, tzinfo=UTC), "TDX-3", "not valid"),
    (datetime(2022, 9, 1, tzinfo=UTC), "TDX-3", "not valid"),
    (datetime(2023, 7, 9, tzinfo=UTC), "TDX-4", "not current"),
    (datetime(2023, 6, 8, 7, 30, tzinfo=UTC), "TDX-10", "TCB info is not current"),
    (datetime(2023, 6, 1, tzinfo=UTC), "TDX-4", "not current"),
])
def test_time_windows(vectors: Path, collateral: TdxCollateral, now: datetime, step: str,
                      what: str) -> None:
    assert what in _fails(vectors, collateral, step, now=now).reason


def _tamper(response: bytes, old: bytes, new: bytes) -> bytes:
    assert response.count(old) >= 1
    return response.replace(old, new, 1)


def test_collateral_signatures_cover_the_raw_bytes(vectors: Path,
                                                   collateral: TdxCollateral) -> None:
    tcb = collateral.tcb_infos[0]
    bumped = _tamper(tcb, b'"tcbEvaluationDataNumber":15', b'"tcbEvaluationDataNumber":16')
    _fails(vectors, dataclasses.replace(collateral, tcb_infos=(bumped,)), "TDX-9")
    spaced = _tamper(tcb, b'"version":3,', b'"version": 3,')
    _fails(vectors, dataclasses.replace(collateral, tcb_infos=(spaced,)), "TDX-9")
    outer = b'{"tcbInfo": ' + tcb[len(b'{"tcbInfo":'):]  # outside the signed value: harmless
    _fails(vectors, dataclasses.replace(collateral, tcb_infos=(outer,)), "TDX-14")
    qe = _tamper(collateral.qe_identity, b'"isvprodid":2', b'"isvprodid":3')
    _fails(vectors, dataclasses.replace(collateral, qe_identity=qe), "TDX-8")
    reserialised = json.dumps(json.loads(collateral.qe_identity)).encode()
    _fails(vectors, dataclasses.replace(collateral, qe_identity=reserialised), "TDX-8")


def test_tcb_info_is_chosen_by_fmspc(vectors: Path, collateral: TdxCollateral) -> None:
    assert len(collateral.tcb_infos) == 2  # the v4 sample (50806f000000) and the v5 one
    only_v5 = dataclasses.replace(collateral, tcb_infos=(collateral.tcb_infos[1],)
                                  if b"90c06f" in collateral.tcb_infos[1]
                                  else (collateral.tcb_infos[0],))
    assert "issued 2026" in _fails(vectors, only_v5, "TDX-10").reason


def test_malformed_collateral_is_a_collateral_error(vectors: Path,
                                                    collateral: TdxCollateral) -> None:
    with pytest.raises(CollateralError):
        verify_tdx(real_quote(vectors), dataclasses.replace(collateral, tcb_infos=(b"{",)), ANY,
                   NOW)
    with pytest.raises(CollateralError):
        verify_tdx(real_quote(vectors), dataclasses.replace(collateral, pck_crl=b"\x30\x00"), ANY,
                   NOW)
    with pytest.raises(CollateralError):
        verify_tdx(real_quote(vectors), object(), ANY, NOW)
