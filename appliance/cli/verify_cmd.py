"""``ao-appliance verify``: prove one result offline (online fetch or an exported bundle)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from appliance.cli import trust_args
from appliance.cli.run_cmd import default_cache_dir
from appliance.cli.urls import node_url
from appliance.compute import ComputeLimits
from appliance.errors import UsageError
from appliance.proof.bundle import MAX_PROOF_BYTES, Proof
from appliance.proof.check import ProofReport, TrustInputs, check_proof
from appliance.proof.fetch import fetch_proof
from appliance.proof.replay import replay_proof


def register(sub: Any) -> None:
    """Register the ``verify`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "verify", help="prove a result: signatures, chains, attestation (and optional replay)",
        description="Check one result as numbered steps. Exit 0 verified, 1 a check failed, "
                    "2 usage or unreachable input.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--node", help="node URL, http(s)://HOST:PORT or HOST:PORT (fetches "
                        "GET /proof/{message})")
    source.add_argument("--bundle", type=Path, help="a proof bundle exported by a node")
    parser.add_argument("--process", help="process id (with --node)")
    parser.add_argument("--message", help="message id (with --node)")
    parser.add_argument("--replay", action="store_true",
                        help="re-evaluate the schedule from slot 0 and compare every result")
    parser.add_argument("--save-bundle", type=Path, help="also write the fetched bundle here")
    trust_args.add_trust_arguments(parser)
    parser.set_defaults(func=verify)


def _load(args: argparse.Namespace) -> Proof:
    if args.bundle is not None:
        return Proof.decode(trust_args.read_input(args.bundle, "--bundle", MAX_PROOF_BYTES))
    if not args.process or not args.message:
        raise UsageError("--node needs --process and --message")
    proof = fetch_proof(node_url(args.node), args.process, args.message, replay=args.replay)
    if args.save_bundle is not None:
        try:
            args.save_bundle.write_bytes(proof.encode())
        except OSError as exc:
            raise UsageError(f"cannot write {args.save_bundle}: {exc.strerror}") from None
    return proof


def _print(report: ProofReport, policy_note: str) -> None:
    lines = []
    if report.emulated:
        lines.append(trust_args.EMULATED_BANNER)
    lines.append(f"policy: {policy_note}")
    lines.append(f"process {report.process_id} message {report.message_id}")
    for step in report.steps:
        lines.append(f"{'✓' if step.ok else '✗'} {step.number}. {step.title}: {step.detail}")
    if report.ok:
        lines.append("VERIFIED" + (" (emulated TEE)" if report.emulated else
                                   f" ({report.platform}, measurement {report.measurement})"))
        lines.append("result: " + json.dumps(report.result, sort_keys=True)[:2000])
    else:
        lines.append("NOT VERIFIED")
    print("\n".join(lines))


def verify(args: argparse.Namespace) -> int:
    """Run the checks; 0 verified, 1 a check failed, 2 usage/unreachable."""
    policy, policy_note = trust_args.policy(args.policy)
    trust = TrustInputs(policy=policy, now=trust_args.now(args.now),
                        certificates=tuple(trust_args.certificates(args.certs)),
                        snp_crls=tuple(trust_args.snp_crls(args.certs)),
                        tdx_collateral=trust_args.tdx_collateral(args.collateral),
                        allow_emulated=args.allow_emulated)
    proof = _load(args)
    cache = Path(os.environ.get("AO_APPLIANCE_REPLAY_CACHE", default_cache_dir()))
    replay = (lambda p: replay_proof(p, cache, ComputeLimits())) if args.replay else None
    report = check_proof(proof, trust, replay)
    if args.json:
        print(json.dumps({**report.as_json(), "policy": policy_note}, sort_keys=True))
    else:
        _print(report, policy_note)
    return 0 if report.ok else 1
