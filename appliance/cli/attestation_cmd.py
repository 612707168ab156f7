"""``ao-appliance attestation``: produce evidence (report), check it offline (verify), and compute
reference measurements (measure)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from appliance.cli import trust_args
from appliance.errors import UsageError
from attestation import reference
from attestation.atomic import write_atomically
from attestation.bundle import decode_evidence, encode_bundle
from attestation.errors import EmulatedEvidenceRefused, MalformedEvidence, VerificationFailed
from attestation.evidence import EvidenceProvider, Platform, VerifiedEvidence
from attestation.providers import TEE_NAMES, provider_for
from attestation.verify import verify_evidence

log = logging.getLogger("appliance.attestation")


def register(sub: Any) -> None:
    """Register ``attestation report|verify|measure``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "attestation", help="produce and verify TEE evidence")
    group = parser.add_subparsers(dest="attestation_command", required=True,
                                  parser_class=type(parser))

    report = group.add_parser("report", help="write an evidence bundle binding REPORT_DATA")
    report.add_argument("--report-data", required=True, help="64 bytes as 128 hex digits")
    report.add_argument("--tee", choices=TEE_NAMES, default="auto")
    report.add_argument("--out", type=Path, default=None, help="bundle file (default: stdout)")
    report.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AO_APPLIANCE_DATA_DIR", "data")),
                        help="node data dir; the emulated TEE keeps its keys in DIR/tee")
    report.set_defaults(func=report_command)

    verify = group.add_parser("verify", help="verify a report, quote or bundle offline")
    verify.add_argument("evidence", type=Path, help="raw SNP report, raw TDX quote, or bundle")
    trust_args.add_trust_arguments(verify)
    verify.set_defaults(func=verify_command)

    measure = group.add_parser("measure", help="expected measurements for a launch config")
    measure.add_argument("config", type=Path, help="firmware-config/*.yaml")
    mode = measure.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 1 unless the recorded measurement equals the computed one")
    mode.add_argument("--write", action="store_true",
                      help="record the computed measurement in the file (atomic rewrite)")
    measure.set_defaults(func=measure_command)


def _hardware_or_emulated(tee: str, state_dir: Path) -> EvidenceProvider:
    provider = provider_for(tee, state_dir)
    if provider is None:
        log.warning("NO TEE DETECTED: falling back to the EMULATED TEE. Its evidence proves "
                    "nothing about hardware.")
        provider = provider_for("emulated", state_dir)
    assert provider is not None
    return provider


def report_command(args: argparse.Namespace) -> int:
    """``attestation report``: evidence over REPORT_DATA as a bundle."""
    try:
        report_data = bytes.fromhex(args.report_data)
    except ValueError:
        raise UsageError("--report-data must be hex") from None
    if len(report_data) != 64:
        raise UsageError(f"--report-data must be 64 bytes (128 hex digits), got {len(report_data)}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s: %(message)s")
    evidence = _hardware_or_emulated(args.tee, args.data_dir / "tee").get_evidence(report_data)
    bundle = encode_bundle(evidence)
    if args.out is None:
        sys.stdout.buffer.write(bundle)
        return 0
    try:
        write_atomically(args.out, bundle)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {evidence.platform} evidence bundle to {args.out}", file=sys.stderr)
    return 0


def _describe(result: VerifiedEvidence, policy_note: str) -> dict[str, Any]:
    return {
        "verified": True,
        "platform": str(result.platform),
        "emulated": result.platform is Platform.EMULATED,
        "measurement": result.measurement.hex(),
        "report_data": result.report_data.hex(),
        "tcb": dict(result.tcb),
        "debug": result.debug,
        "policy": policy_note,
        "steps": list(result.steps),
        "details": dict(result.details),
        "warnings": list(result.warnings),
    }


def _print_human(out: dict[str, Any]) -> None:
    lines = [trust_args.EMULATED_BANNER] if out["emulated"] else []
    lines += [
        f"verified: {out['platform']} evidence",
        *(f"warning: {w}" for w in out["warnings"]),
        f"measurement: {out['measurement']}",
        f"report_data: {out['report_data']}",
        "tcb: " + " ".join(f"{k}={v}" for k, v in out["tcb"].items()),
        f"debug: {'on' if out['debug'] else 'off'}",
        f"policy: {out['policy']}",
        "steps passed: " + " ".join(out["steps"]),
    ]
    lines += [f"{key}: {value}" for key, value in out["details"].items()]
    print("\n".join(lines))


def verify_command(args: argparse.Namespace) -> int:
    """``attestation verify``: exit 0 verified, 1 rejected (naming the step), 2 usage/unreadable."""
    raw = trust_args.read_input(args.evidence, "evidence")
    now = trust_args.now(args.now)
    certificates = trust_args.certificates(args.certs)
    policy, policy_note = trust_args.policy(args.policy)
    collateral = trust_args.tdx_collateral(args.collateral)
    try:
        evidence = decode_evidence(raw)
        result = verify_evidence(evidence, policy, now, certificates=certificates,
                                 tdx_collateral=collateral, allow_emulated=args.allow_emulated,
                                 snp_crls=trust_args.snp_crls(args.certs))
    except VerificationFailed as exc:
        reason = exc.reason
        if isinstance(exc, EmulatedEvidenceRefused):
            reason = f"{reason}; {trust_args.EMULATED_REFUSED_HINT}"
        failure = {"verified": False, "step": exc.step, "spec": exc.spec, "reason": reason,
                   "warnings": list(exc.warnings)}
        if args.json:
            print(json.dumps(failure))
        else:
            print("\n".join([f"REJECTED at step {exc.step} ({exc.spec}): {reason}",
                             *(f"warning: {w}" for w in exc.warnings)]))
        return 1
    except MalformedEvidence as exc:
        if args.json:
            print(json.dumps({"verified": False, "step": "INPUT", "reason": str(exc)}))
        else:
            print(f"REJECTED: {exc}")
        return 1
    out = _describe(result, policy_note)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        _print_human(out)
    return 0


def measure_command(args: argparse.Namespace) -> int:
    """``attestation measure``: expected launch measurements for a firmware-config YAML.

    Exit 0: computed (and equal to the recorded value when there is one, or now recorded with
    ``--write``); 1: the recorded value differs, or ``--check`` found none; 2: bad config.
    """
    text = trust_args.read_input(args.config, "launch config", 1 << 20).decode("utf-8", "replace")
    config = reference.load_launch_config(text, str(args.config))
    result = reference.compute_measurements(config, args.config.parent)
    if args.write:
        if not result.computed:
            raise UsageError(f"{args.config}: TDX values are recorded by hand under tdx (mrtd, "
                             "rtmrs) from a measured boot; there is nothing to compute")
        if result.matches_recorded:
            print(f"{args.config}: recorded measurement is up to date")
            return 0
        updated = reference.with_recorded_measurement(text, config, result.measurement)
        try:
            write_atomically(args.config, updated.encode("utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot write {args.config}: {exc.strerror or exc}") from None
        print(f"{args.config}: recorded measurement {result.measurement.hex()}")
        return 0
    if args.check:
        verdict = result.matches_recorded
        if verdict:
            print(f"{args.config}: OK {result.measurement.hex()}")
            return 0
        recorded = config.expected_measurement.hex() if config.expected_measurement else "none"
        print(f"{args.config}: MISMATCH recorded {recorded}, computed {result.measurement.hex()}")
        return 1
    print(reference.render(result), end="")
    return 1 if result.matches_recorded is False else 0
