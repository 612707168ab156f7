"""Differential test: our TDX verdicts against dcap-qvl's on the same quotes, collateral and time.

Cases: the three real quotes (dcap-qvl's UpToDate and "outdated" samples, Intel's sample), the
synthetic v4/v5 quotes of the test PKI under many TCB situations, and some hundreds of mutations
(single-bit flips in signed fields and in the PCK chain, tampered, swapped and expired collateral,
revoked certificates). For each, accept/reject and the TCB status must agree; a disagreement is a
bug, or one of :data:`DIFFERENCES`, each reasoned in docs/attestation.md ("dcap-qvl as a second
opinion").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from attestation.tdx.collateral import TdxCollateral
from attestation.tdx.files import load_collateral_dir
from attestation.tdx.quote import HEADER_SIZE, TD_REPORT10_SIZE
from tests.support import dcap_oracle, tdx_pki
from tests.support.dcap_oracle import Verdict
from tests.support.tdx_pki import Knobs, _level

DCAP_NOW = datetime(2025, 7, 1, tzinfo=UTC)
SIGNED_END = HEADER_SIZE + TD_REPORT10_SIZE
SIG = SIGNED_END + 4
QE_REPORT = SIG + 134
QE_AUTH = QE_REPORT + 384 + 64 + 2
PEM = QE_AUTH + 32 + 6

EMBEDDED_ROOT = ("the quote's PCK chain carries a root CA that is corrupt or not the pinned "
                 "one: we refuse it at TDX-2 (Intel's QVL/QvE also authenticate the chain's root "
                 "against their built-in Intel root); dcap-qvl discards the embedded root and "
                 "chains leaf and CA to its own")
CRL_NOT_YET_VALID = ("a CRL issued after `now` (thisUpdate > now): we require "
                     "thisUpdate <= now <= nextUpdate (RFC 5280 §5.1.2.4-5, the same window as "
                     "for TCB info and QE identity); dcap-qvl checks only nextUpdate")
DIFFERENCES: dict[str, str] = {
    **{f"flip PCK chain byte {b}": EMBEDDED_ROOT for b in (4208, 4305, 4596, 4693, 4790, 4887)},
    "PCK CRL of another date": CRL_NOT_YET_VALID,
    "synthetic at NOW-12 days": CRL_NOT_YET_VALID,
}
"""Case name → why our verdict differs from dcap-qvl's; in each we reject and dcap-qvl accepts."""


@dataclass(frozen=True)
class Case:
    """One comparison: a quote, its collateral, the time, and the root both verifiers trust."""

    name: str
    quote: bytes
    collateral: TdxCollateral
    now: datetime
    pin: str | None = None  # our trust anchor when not Intel's (test PKI)
    root_pem: bytes | None = None  # the same anchor for dcap-qvl


@pytest.fixture(scope="module")
def dcap() -> ModuleType:
    return dcap_oracle.oracle()


def _flip(data: bytes, byte: int, bit: int) -> bytes:
    out = bytearray(data)
    out[byte] ^= 1 << bit
    return bytes(out)


def _real_cases(vectors: Path) -> Iterator[Case]:
    base = vectors / "tdx-dcap-qvl"
    quote = (base / "tdx_quote").read_bytes()
    good = load_collateral_dir(base / "collateral")
    outdated = load_collateral_dir(base / "collateral-outdated")
    intel = load_collateral_dir(vectors / "tdx")
    yield Case("dcap-qvl sample", quote, good, DCAP_NOW)
    yield Case("dcap-qvl sample cut to its declared length", quote[:4936], good, DCAP_NOW)
    yield Case("dcap-qvl outdated sample", (base / "tdx_quote_outdated").read_bytes(), outdated,
               datetime(2026, 3, 1, tzinfo=UTC))
    yield Case("Intel sample", (vectors / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes(),
               intel, datetime(2023, 6, 20, tzinfo=UTC))
    # single-bit flips: header, TD report body, quote signature, attestation key, QE report,
    # QE report signature, QE auth data, the PCK chain's PEM, the unsigned trailer
    signed = [*range(0, SIGNED_END, 3), *range(SIG, QE_AUTH + 32, 5)]
    for byte in signed:
        yield Case(f"flip byte {byte}", _flip(quote, byte, byte % 8), good, DCAP_NOW)
    for byte in range(PEM + 40, 4936 - 40, 97):
        yield Case(f"flip PCK chain byte {byte}", _flip(quote, byte, 1), good, DCAP_NOW)
    for byte in range(4936, len(quote), 7):
        yield Case(f"flip trailer byte {byte}", _flip(quote, byte, 3), good, DCAP_NOW)
    # collateral: swapped, expired, tampered
    swaps: dict[str, TdxCollateral] = {
        "outdated collateral": outdated,
        "Intel sample collateral": intel,
        "CRLs swapped": dataclasses.replace(good, pck_crl=good.root_crl, root_crl=good.pck_crl),
        "root CRL of another date": dataclasses.replace(good, root_crl=intel.root_crl),
        "PCK CRL of another date": dataclasses.replace(good, pck_crl=outdated.pck_crl),
        "QE identity of another date": dataclasses.replace(good, qe_identity=intel.qe_identity),
        "TCB info of another FMSPC": dataclasses.replace(good, tcb_infos=outdated.tcb_infos),
    }
    for name, collateral in swaps.items():
        yield Case(name, quote, collateral, DCAP_NOW)
    for when in (datetime(2025, 6, 18, tzinfo=UTC), datetime(2025, 7, 19, 12, tzinfo=UTC),
                 datetime(2025, 7, 25, tzinfo=UTC), datetime(2019, 1, 1, tzinfo=UTC),
                 datetime(2060, 1, 1, tzinfo=UTC), datetime(2025, 6, 20, tzinfo=UTC),
                 datetime(2025, 7, 18, tzinfo=UTC)):
        yield Case(f"at {when.isoformat()}", quote, good, when)
    tcb = good.tcb_infos[0]
    body = tcb.index(b'"tcbInfo":') + 10
    for offset in range(body + 5, tcb.index(b'"signature"') - 5, 211):
        yield Case(f"TCB info byte {offset} flipped", quote,
                   dataclasses.replace(good, tcb_infos=(_flip(tcb, offset, 0),)), DCAP_NOW)
    qe = good.qe_identity
    for offset in range(qe.index(b"{", 1) + 5, qe.index(b'"signature"') - 5, 53):
        yield Case(f"QE identity byte {offset} flipped", quote,
                   dataclasses.replace(good, qe_identity=_flip(qe, offset, 0)), DCAP_NOW)
    sig_at = tcb.index(b'"signature":"') + 20
    yield Case("TCB info signature changed", quote, dataclasses.replace(
        good, tcb_infos=(tcb[:sig_at] + (b"0" if tcb[sig_at:sig_at + 1] != b"0" else b"1")
                         + tcb[sig_at + 1:],)), DCAP_NOW)


def _synthetic_knobs() -> Iterator[tuple[str, Knobs]]:
    for status in ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                   "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded",
                   "Revoked"):
        yield f"platform {status}", Knobs(tcb_levels=[_level(status)])
    for qe_status in ("OutOfDate", "Revoked"):
        for status in ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded"):
            yield f"QE {qe_status}, platform {status}", Knobs(
                tcb_levels=[_level(status)],
                qe_levels=[{"tcb": {"isvsvn": 5}, "tcbDate": "2024-01-01T00:00:00Z",
                            "tcbStatus": "UpToDate"},
                           {"tcb": {"isvsvn": 4}, "tcbDate": "2023-01-01T00:00:00Z",
                            "tcbStatus": qe_status}])
    yield "QE ISVSVN below every level", Knobs(qe_isv_svn=3)
    yield "QE MRSIGNER differs", Knobs(qe_mrsigner=b"\x01" * 32)
    yield "revoked PCK leaf", Knobs(revoke_leaf=True)
    yield "revoked PCK CA", Knobs(revoke_ca=True)
    yield "revoked TCB signing certificate", Knobs(revoke_signer=True)
    yield "DEBUG TD", Knobs(td_attributes=bytes.fromhex("0100001000000000"))
    yield "no SEPT_VE_DISABLE", Knobs(td_attributes=bytes(8))
    yield "FMSPC mismatch", Knobs(fmspc=bytes.fromhex("90c06f000000"))
    yield "SEAMATTRIBUTES differ", Knobs(seam_attributes=b"\x01" + bytes(7))
    yield "TEE TCB below every level", Knobs(
        tcb_levels=[_level("UpToDate", tdx=bytes([3, 0, 5] + [0] * 13))])
    sgx = tdx_pki.SGX_TCB
    yield "second level matches", Knobs(tcb_levels=[
        _level("UpToDate", sgx=(4, *sgx[1:])), _level("UpToDate", pce=12),
        _level("SWHardeningNeeded"), _level("OutOfDate")])
    yield "PCESVN below every level", Knobs(tcb_levels=[_level("UpToDate", pce=12)])
    module = {"id": "TDX_01", "mrsigner": "00" * 48, "attributes": "00" * 8,
              "attributesMask": "ff" * 8, "tcbLevels": [
                  {"tcb": {"isvsvn": 5}, "tcbDate": "2024-01-01T00:00:00Z",
                   "tcbStatus": "UpToDate"},
                  {"tcb": {"isvsvn": 2}, "tcbDate": "2023-01-01T00:00:00Z",
                   "tcbStatus": "OutOfDate"}]}
    tee = bytes([3, 1, 4] + [0] * 13)
    for svn, name in ((3, "module OutOfDate"), (6, "module UpToDate"), (1, "module below")):
        yield f"TDX module identity, {name}", Knobs(
            tee_tcb_svn=bytes([svn, *tee[1:]]), module_identities=[module],
            tcb_levels=[_level("UpToDate", tdx=bytes([9, 9, 4] + [0] * 13))])
    yield "TDX module identity missing", Knobs(
        tee_tcb_svn=tee, module_identities=[],
        tcb_levels=[_level("UpToDate", tdx=bytes([9, 9, 4] + [0] * 13))])


def _synthetic_cases() -> Iterator[Case]:
    world = tdx_pki.World()
    root = tdx_pki._pem(world.root)

    def case(name: str, k: Knobs, version: int = 4, now: datetime = tdx_pki.NOW,
             mutate: Callable[[bytes], bytes] = lambda q: q) -> Case:
        return Case(name, mutate(world.quote(k, version)), world.collateral(k), now, world.pin,
                    root)

    for name, k in _synthetic_knobs():
        for version in (4, 5):
            yield case(f"synthetic v{version}: {name}", k, version)
    for days in (-12, -9, 18, 19, 21, 4000):
        yield case(f"synthetic at NOW{days:+d} days", Knobs(), now=tdx_pki.NOW + timedelta(days))
    quote = world.quote(Knobs())
    for byte in range(0, len(quote) - 1500, 23):
        yield case(f"synthetic flip byte {byte}", Knobs(),
                   mutate=lambda q, b=byte: _flip(q, b, b % 8))
    yield case("synthetic padded", Knobs(), mutate=lambda q: q + bytes(512))
    other = tdx_pki.World()  # a quote from another PKI under this one's collateral
    yield Case("synthetic quote of another root", other.quote(Knobs()), world.collateral(Knobs()),
               tdx_pki.NOW, world.pin, root)


@pytest.fixture(scope="module")
def cases(vectors: Path) -> list[Case]:
    return [*_real_cases(vectors), *_synthetic_cases()]


def _compare(dcap: ModuleType, case: Case) -> tuple[Verdict, Verdict]:
    mine = dcap_oracle.ours(case.quote, case.collateral, case.now, case.pin)
    theirs = dcap_oracle.theirs(dcap, case.quote, case.collateral, case.now, case.root_pem)
    return mine, theirs


def test_every_case_agrees_or_is_a_documented_difference(dcap: ModuleType,
                                                         cases: list[Case]) -> None:
    assert len(cases) >= 300 and len({c.name for c in cases}) == len(cases)
    disagreements = {}
    for case in cases:
        mine, theirs = _compare(dcap, case)
        if not mine.same(theirs):
            disagreements[case.name] = (mine, theirs)
    print(f"dcap-qvl differential: {len(cases)} cases, {len(cases) - len(disagreements)} agree, "
          f"{len(disagreements)} documented differences")
    unexplained = {n: v for n, v in disagreements.items() if n not in DIFFERENCES}
    assert not unexplained, "\n".join(f"{name}: ours {m} / dcap-qvl {t}"
                                       for name, (m, t) in unexplained.items())
    assert set(disagreements) == set(DIFFERENCES), "documented differences that now agree: " \
        + ", ".join(sorted(set(DIFFERENCES) - set(disagreements)))
    for mine, theirs in disagreements.values():
        assert not mine.accepted and theirs.accepted  # where we differ, we are the stricter


def test_the_cases_cover_both_verdicts_and_several_statuses(dcap: ModuleType,
                                                            cases: list[Case]) -> None:
    verdicts = [_compare(dcap, c)[0] for c in cases if c.name.startswith("synthetic v4")
                or c.name.startswith("dcap-qvl")]
    assert {v.status for v in verdicts if v.accepted} >= {
        "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "OutOfDate"}
    assert sum(not v.accepted for v in verdicts) >= 10


def test_the_real_sample_is_up_to_date_for_both(dcap: ModuleType, cases: list[Case]) -> None:
    mine, theirs = _compare(dcap, cases[0])
    assert mine == theirs == Verdict(True, "UpToDate")
