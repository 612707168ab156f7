"""Section 4: offline verification rates — SEV-SNP report (real vector), TDX quote (the real
vector up to where its sample collateral refuses it, and a quote of the test PKI through all 20
steps), emulated report, and a proof (one result; a chain of N results)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import wasmtime

from appliance.proof.check import TrustInputs, check_proof
from appliance.proof.export import build_proof
from attestation.errors import VerificationFailed
from attestation.policy import Policy, SnpPolicy
from attestation.providers import EmulatedProvider
from attestation.snp.verify import verify_emulated, verify_snp
from attestation.tdx import verify as tdx_verify
from attestation.tdx.files import load_collateral_dir
from bench.ceiling import ECHO, FORMAT
from bench.common import pipeline, rate
from tests.support import tdx_pki

VECTORS = Path(os.environ.get("AO_APPLIANCE_VECTORS", Path(__file__).resolve().parents[2]
                              / "shared" / "vectors"))


def _rate(count: int, fn: Any) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return rate(count, time.perf_counter() - start)


def run(quick: bool, cache: Any, log: Any) -> dict[str, Any]:
    """Verifications per second, and proof-check seconds for 1 and N results."""
    count = 20 if quick else 300
    chain = 50 if quick else 1000
    out: dict[str, Any] = {}
    snp = VECTORS / "sev-snp"
    if (snp / "attestation.bin").is_file():
        report = (snp / "attestation.bin").read_bytes()
        certs = [(snp / "vcek.testcer").read_bytes(),
                 (snp / "amd-roots" / "ask_ark_milan.pem").read_bytes()]
        policy = Policy(any_measurement=True, snp=SnpPolicy(allow_debug=True))
        when = datetime(2025, 1, 1, tzinfo=UTC)
        log("verification: SEV-SNP (real Milan report)")
        out["snp_reports_per_s"] = _rate(count, lambda: verify_snp(report, certs, policy, when))
    else:
        out["snp_reports_per_s"] = None
    out.update(_tdx(count, log))
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        evidence = EmulatedProvider(Path(tmp)).get_evidence(bytes(64))
    now = datetime.now(UTC)
    log("verification: emulated report")
    out["emulated_reports_per_s"] = _rate(count, lambda: verify_emulated(
        evidence.raw, evidence.certificates, Policy(any_measurement=True), now,
        allow_emulated=True))
    log(f"verification: proof of one result and of a chain of {chain}")
    with pipeline(bytes(wasmtime.wat2wasm(ECHO.read_text())), FORMAT) as pipe:
        pid = pipe.spawn("chain")
        msgs = [pipe.item(pid, {"Action": "Echo"}, "x") for _ in range(chain)]
        pipe.send_all({pid: msgs}, clients=8)
        short = build_proof(pipe.node, pid, msgs[0].id)
        long = build_proof(pipe.node, pid, msgs[-1].id)
    # `now` after the node's attestation exists: its certificate is back-dated only 5 minutes
    trust = TrustInputs(Policy(any_measurement=True), datetime.now(UTC), allow_emulated=True)
    start = time.perf_counter()
    assert check_proof(short, trust).ok
    out["proof_1_result_ms"] = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    assert check_proof(long, trust).ok
    out[f"proof_chain_{chain}_ms"] = (time.perf_counter() - start) * 1e3
    return out


def _refused_at(step: str, verify: Any) -> None:
    try:
        verify()
    except VerificationFailed as exc:
        if exc.step == step:
            return
        raise
    raise AssertionError(f"expected a refusal at {step}")


def _tdx(count: int, log: Any) -> dict[str, Any]:
    """TDX quotes per second: the real quote (its sample TCB info covers no level this platform
    reaches, so every run ends at TDX-14 after all signature, chain and CRL checks) and a quote
    of the test PKI, which passes all 20 steps with the same kinds of keys and collateral."""
    out: dict[str, Any] = {}
    tdx = VECTORS / "tdx"
    if (tdx / "tdx_prod_quote_SPR_E4.dat").is_file():
        raw = (tdx / "tdx_prod_quote_SPR_E4.dat").read_bytes()
        quote = raw[:tdx_pki.signed_quote_length(raw)]
        collateral = load_collateral_dir(tdx)
        when = datetime(2023, 6, 20, tzinfo=UTC)
        policy = Policy(any_measurement=True)
        log("verification: TDX (real SPR quote, to its TDX-14 refusal)")
        out["tdx_real_quotes_to_step_14_per_s"] = _rate(count, lambda: _refused_at(
            "TDX-14", lambda: tdx_verify.verify_tdx(quote, collateral, policy, when)))
    else:
        out["tdx_real_quotes_to_step_14_per_s"] = None
    world = tdx_pki.World()
    knobs = tdx_pki.Knobs()
    quote, collateral = world.quote(knobs), world.collateral(knobs)
    log("verification: TDX (test-PKI quote, all 20 steps)")
    out["tdx_test_pki_quotes_per_s"] = _rate(count, lambda: tdx_verify._verify(
        quote, collateral, tdx_pki.ANY, tdx_pki.NOW, world.pin))
    return out
