"""TDX verification end to end in a test-only PKI (own root, PCK CA, TCB signing key).

The real vectors stop at TDX-14 (their collateral lists no TCB level this platform reaches), so
the later steps, revocation and TCB level selection are exercised here with quotes and collateral
built and signed by a test root passed to the verifier in place of the Intel pin
(``tests/support/tdx_pki.py``).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from attestation.errors import VerificationFailed
from attestation.evidence import Platform
from attestation.policy import Policy, TdxPolicy
from attestation.tdx import verify as tdx_verify
from attestation.tdx.quote import parse_quote
from tests.support import tdx_pki
from tests.support.tdx_pki import ANY, MRTD, NOW, REPORT_DATA, SGX_TCB, Knobs, _level


class World(tdx_pki.World):
    """The test PKI, plus the assertion that a verification stops at a given step."""

    def fails(self, step: str, k: Knobs | None = None, policy: Policy = ANY,
              now: datetime = NOW, quote: bytes | None = None) -> VerificationFailed:
        with pytest.raises(VerificationFailed) as info:
            self.verify(k, policy, now, quote)
        assert info.value.step == step, str(info.value)
        return info.value


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def test_synthetic_quote_verifies_through_every_step(world: World) -> None:
    result = world.verify()
    assert result.platform is Platform.TDX
    assert result.measurement == MRTD and result.report_data == REPORT_DATA
    assert result.tcb["status"] == "UpToDate" and result.tcb["pce_svn"] == 11
    assert result.steps == tuple(f"TDX-{i}" for i in range(1, 21))
    assert result.details["rtmr3"] == "03" * 48 and not result.debug


def test_quote_v5_body_type_2_verifies(world: World) -> None:
    k = Knobs()
    assert parse_quote(world.quote(k, version=5)).header.version == 5
    assert world.verify(k, quote=world.quote(k, version=5)).tcb["status"] == "UpToDate"


def test_the_intel_pin_rejects_a_test_root(world: World) -> None:
    k = Knobs()
    with pytest.raises(VerificationFailed) as info:
        tdx_verify.verify_tdx(world.quote(k), world.collateral(k), ANY, NOW)
    assert info.value.step == "TDX-2" and "pinned" in info.value.reason


@pytest.mark.parametrize(("knobs", "what"), [
    (Knobs(revoke_leaf=True), "PCK leaf"),
    (Knobs(revoke_ca=True), "Platform CA"),
])
def test_revoked_pck_certificates(world: World, knobs: Knobs, what: str) -> None:
    assert what in world.fails("TDX-4", knobs).reason


def test_revoked_tcb_signing_certificate(world: World) -> None:
    assert "revoked" in world.fails("TDX-8", Knobs(revoke_signer=True)).reason


def test_qe_identity_mismatch_and_levels(world: World) -> None:
    assert "MRSIGNER" in world.fails("TDX-11", Knobs(qe_mrsigner=b"\x01" * 32)).reason
    assert "below every" in world.fails("TDX-11", Knobs(qe_isv_svn=3)).reason
    old_qe = Knobs(qe_levels=[
        {"tcb": {"isvsvn": 5}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": "UpToDate"},
        {"tcb": {"isvsvn": 4}, "tcbDate": "2023-01-01T00:00:00Z", "tcbStatus": "OutOfDate"}])
    assert "QE OutOfDate" in world.fails("TDX-15", old_qe).reason
    revoked = Knobs(tcb_levels=[_level("Revoked")])
    anything = Policy(any_measurement=True, tdx=TdxPolicy(accepted_tcb_status=frozenset({
        "UpToDate", "Revoked"})))
    assert "never accepted" in world.fails("TDX-15", revoked, anything).reason
    relaxed = Policy(any_measurement=True, tdx=TdxPolicy(accepted_tcb_status=frozenset({
        "UpToDate", "OutOfDate"})))
    tcb = world.verify(old_qe, relaxed).tcb
    assert (tcb["status"], tcb["platform_status"], tcb["qe_status"]) == (
        "OutOfDate", "UpToDate", "OutOfDate")


def test_a_signed_quote_from_another_vendor_is_refused_after_its_signatures(world: World) -> None:
    failure = world.fails("TDX-11", Knobs(qe_vendor_id=b"\x01" * 16))
    assert "not Intel's" in failure.reason


def test_trailing_bytes_never_change_a_verdict(world: World) -> None:
    k = Knobs()
    padded = world.quote(k) + bytes(128)
    result = world.verify(k, quote=padded)
    assert result.tcb["status"] == "UpToDate" and result.details["trailing_bytes"] == "128"
    assert result.warnings and not world.verify(k).warnings
    failing = Knobs(qe_isv_svn=3)
    assert world.fails("TDX-11", failing, quote=world.quote(failing) + b"x").warnings


def test_fmspc_mismatch(world: World) -> None:
    assert "FMSPC" in world.fails("TDX-12", Knobs(fmspc=bytes.fromhex("90c06f000000"))).reason


def test_tcb_level_selection(world: World) -> None:
    levels = [
        _level("UpToDate", sgx=(4, *SGX_TCB[1:])),
        _level("UpToDate", pce=12),
        _level("SWHardeningNeeded"),
        _level("OutOfDate"),
    ]
    accepting = Policy(any_measurement=True, tdx=TdxPolicy(
        accepted_tcb_status=frozenset({"UpToDate", "SWHardeningNeeded"})))
    assert world.verify(Knobs(tcb_levels=levels), accepting).tcb["status"] == "SWHardeningNeeded"
    assert "TCB status SWHardeningNeeded" in world.fails("TDX-15", Knobs(tcb_levels=levels)).reason
    too_new = Knobs(tcb_levels=[_level("UpToDate", tdx=bytes([3, 0, 5] + [0] * 13))])
    assert "TCB not supported" in world.fails("TDX-14", too_new).reason


def test_tdx_module_identities(world: World) -> None:
    tee = bytes([3, 1, 4] + [0] * 13)
    identity = {"id": "TDX_01", "mrsigner": "00" * 48, "attributes": "00" * 8,
                "attributesMask": "ff" * 8, "tcbLevels": [
                    {"tcb": {"isvsvn": 5}, "tcbDate": "2024-01-01T00:00:00Z",
                     "tcbStatus": "UpToDate"},
                    {"tcb": {"isvsvn": 2}, "tcbDate": "2023-01-01T00:00:00Z",
                     "tcbStatus": "OutOfDate"}]}
    level = _level("UpToDate", tdx=bytes([9, 9, 4] + [0] * 13))  # bytes 0, 1 are not compared
    k = Knobs(tee_tcb_svn=tee, tcb_levels=[level], module_identities=[identity])
    failure = world.fails("TDX-15", k)
    assert "TDX module OutOfDate" in failure.reason
    assert "TDX_01" in world.fails("TDX-13", dataclasses.replace(k, module_identities=[])).reason
    assert "SEAMATTRIBUTES" in world.fails(
        "TDX-13", Knobs(seam_attributes=b"\x01" + bytes(7))).reason


def test_policy_steps(world: World) -> None:
    debug = Knobs(td_attributes=bytes.fromhex("0100001000000000"))
    world.fails("TDX-16", debug)
    assert "SEPT_VE_DISABLE" in world.fails("TDX-16", Knobs(td_attributes=bytes(8))).reason
    assert world.verify(Knobs(td_attributes=bytes(8)), Policy(
        any_measurement=True, tdx=TdxPolicy(require_sept_ve_disable=False))).steps[-1] == "TDX-20"
    assert world.verify(debug, Policy(any_measurement=True, tdx=TdxPolicy(allow_debug=True))).debug
    world.fails("TDX-17", policy=Policy(any_measurement=True, tdx=TdxPolicy(xfam=bytes(8))))
    world.fails("TDX-17", policy=Policy(any_measurement=True,
                                        tdx=TdxPolicy(td_attributes=b"\x10" + bytes(7))))
    world.fails("TDX-18", policy=Policy(any_measurement=True, tdx=TdxPolicy(rtmrs={2: bytes(48)})))
    assert world.verify(policy=Policy(any_measurement=True, tdx=TdxPolicy(
        rtmrs={2: b"\x02" * 48}))).steps[-3] == "TDX-18"
    world.fails("TDX-19", policy=Policy(any_measurement=True, expected_report_data=bytes(64)))
    world.fails("TDX-20", policy=Policy(allowed_measurements=frozenset({bytes(48)})))
    assert world.verify(policy=Policy(allowed_measurements=frozenset({MRTD}),
                                      expected_report_data=REPORT_DATA)).measurement == MRTD


def test_collateral_windows(world: World) -> None:
    assert "QE identity is not current" in world.fails(
        "TDX-10", now=datetime(2024, 6, 19, 12, tzinfo=UTC)).reason
    world.fails("TDX-4", now=NOW + timedelta(days=25))
