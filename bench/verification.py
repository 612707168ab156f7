"""Section 4: offline verification rates — SEV-SNP report (real vector), emulated report, and a
proof (one result; a chain of N results)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import wasmtime

from appliance.proof.check import TrustInputs, check_proof
from appliance.proof.export import build_proof
from attestation.policy import Policy, SnpPolicy
from attestation.providers import EmulatedProvider
from attestation.snp.verify import verify_emulated, verify_snp
from bench.ceiling import ECHO, FORMAT
from bench.common import pipeline, rate

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
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        evidence = EmulatedProvider(Path(tmp)).get_evidence(bytes(64))
    now = datetime.now(UTC)
    log("verification: emulated report")
    out["emulated_reports_per_s"] = _rate(count, lambda: verify_emulated(
        evidence.raw, evidence.certificates, Policy(any_measurement=True), now,
        allow_emulated=True))
    log(f"verification: proof of one result and of a chain of {chain}")
    trust = TrustInputs(Policy(any_measurement=True), now, allow_emulated=True)
    with pipeline(bytes(wasmtime.wat2wasm(ECHO.read_text())), FORMAT) as pipe:
        pid = pipe.spawn("chain")
        msgs = [pipe.item(pid, {"Action": "Echo"}, "x") for _ in range(chain)]
        pipe.send_all({pid: msgs}, clients=8)
        short = build_proof(pipe.node, pid, msgs[0].id)
        long = build_proof(pipe.node, pid, msgs[-1].id)
    start = time.perf_counter()
    assert check_proof(short, trust).ok
    out["proof_1_result_ms"] = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    assert check_proof(long, trust).ok
    out[f"proof_chain_{chain}_ms"] = (time.perf_counter() - start) * 1e3
    return out
