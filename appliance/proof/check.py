"""The offline checks behind ``ao-appliance verify``, as numbered steps (pure: no I/O, no clock).

Steps stop at the first failure; the report lists every step that ran with its outcome.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from appliance.ao import items
from appliance.errors import ApplianceError
from appliance.node.chain import first_hash_chain, next_hash_chain, report_data
from appliance.proof.bundle import Proof
from attestation.bundle import decode_evidence
from attestation.errors import AttestationError, EmulatedEvidenceRefused, VerificationFailed
from attestation.evidence import Platform
from attestation.policy import Policy
from attestation.verify import verify_evidence

MAX_ITEM_BYTES = 64 << 20


class CheckFailed(Exception):
    """One step's reason for failing."""


@dataclass(frozen=True)
class Step:
    """One numbered check and its outcome."""

    number: int
    title: str
    ok: bool
    detail: str


@dataclass
class ProofReport:
    """Everything a verification run established (or the step where it stopped)."""

    process_id: str
    message_id: str
    steps: list[Step] = field(default_factory=list)
    emulated: bool = False
    platform: str = ""
    measurement: str = ""
    result: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when every step that ran passed and none was cut short."""
        return bool(self.steps) and all(s.ok for s in self.steps)

    def as_json(self) -> dict[str, Any]:
        """Machine-readable form for ``--json``."""
        return {"verified": self.ok, "process": self.process_id, "message": self.message_id,
                "emulated": self.emulated, "platform": self.platform,
                "measurement": self.measurement, "result": self.result,
                "steps": [{"step": s.number, "title": s.title, "ok": s.ok, "detail": s.detail}
                          for s in self.steps]}


@dataclass(frozen=True)
class TrustInputs:
    """What the user trusts: policy, extra certificates/collateral, the emulated opt-in."""

    policy: Policy
    now: datetime
    certificates: Sequence[bytes] = ()
    tdx_collateral: object | None = None
    allow_emulated: bool = False
    snp_crls: Sequence[bytes] = ()


@dataclass
class _Parsed:
    assignments: list[items.Item]
    results: list[items.Item]
    attestations: dict[str, items.Item]
    crons: list[items.Item] = field(default_factory=list)
    node_key: bytes = b""

    def chain(self) -> list[items.Item]:
        """Every Result in evaluation order: each slot's, then the cron Results after it."""
        after: dict[str, list[items.Item]] = {}
        for cron in self.crons:
            after.setdefault(_tag(cron, "Ordinate"), []).append(cron)
        return [r for slot, result in enumerate(self.results)
                for r in (result, *after.get(str(slot), []))]


def _tag(item: items.Item, name: str) -> str:
    return items.first_tag(item, name) or ""


def _parse_all(proof: Proof) -> tuple[_Parsed, str]:
    def parse(raws: Sequence[bytes], what: str) -> list[items.Item]:
        out = []
        for index, raw in enumerate(raws):
            try:
                out.append(items.parse_verified(raw, MAX_ITEM_BYTES))
            except ApplianceError as exc:
                raise CheckFailed(f"{what} #{index}: {exc}") from None
        return out

    parsed = _Parsed(parse(proof.assignments, "assignment"), parse(proof.results, "result"),
                     {a.id: a for a in parse(proof.attestations, "attestation")})
    parsed.crons = parse(proof.crons, "cron result")
    parse(proof.messages, "message")
    if proof.module is not None:
        parse([proof.module], "module")
    if not parsed.results or len(parsed.results) != len(parsed.assignments):
        raise CheckFailed(f"{len(parsed.results)} results for {len(parsed.assignments)} "
                          "assignments; the bundle must cover slots 0..n for both")
    count = (len(parsed.results) + len(parsed.assignments) + len(parsed.attestations)
             + len(parsed.crons))
    return parsed, f"{count} items, every signature valid"


def _same_signer(p: _Parsed) -> str:
    keys = {i.owner for i in (*p.results, *p.crons, *p.assignments, *p.attestations.values())}
    if len(keys) != 1:
        raise CheckFailed(f"items are signed by {len(keys)} different keys")
    p.node_key = keys.pop()
    return f"node {p.results[-1].owner_address}"


def _target(p: _Parsed, proof: Proof) -> str:
    last = p.results[-1]
    if _tag(last, "Message") != proof.message_id or _tag(last, "Process") != proof.process_id:
        raise CheckFailed("the last Result is not for the asked message/process")
    if last.target != proof.process_id or _tag(last, "Type") != "Result":
        raise CheckFailed("the last item is not a Result targeting the process")
    return f"Result {last.id} is for message {proof.message_id} at slot {len(p.results) - 1}"


def _result_matches_assignment(p: _Parsed, proof: Proof) -> str:
    for slot, (result, assignment) in enumerate(zip(p.results, p.assignments, strict=True)):
        expect = {"Process": proof.process_id, "Nonce": str(slot), "Assignment": assignment.id,
                  "Message": _tag(assignment, "Message"),
                  "Hash-Chain": _tag(assignment, "Hash-Chain")}
        for name, value in expect.items():
            if _tag(result, name) != value:
                raise CheckFailed(f"slot {slot}: Result {name}={_tag(result, name)!r}, "
                                  f"assignment says {value!r}")
        if _tag(assignment, "Process") != proof.process_id or \
                _tag(assignment, "Nonce") != str(slot) or _tag(assignment, "Type") != "Assignment":
            raise CheckFailed(f"slot {slot}: assignment is not slot {slot} of the process")
    last = len(p.results) - 1
    for cron in p.crons:
        ordinate = _tag(cron, "Ordinate")
        if _tag(cron, "Process") != proof.process_id or _tag(cron, "Type") != "Result" or \
                not _tag(cron, "Cron") or not ordinate.isdigit() or int(ordinate) >= last:
            raise CheckFailed(f"cron Result {cron.id} is not a cron Result of the process "
                              f"between slots 0 and {last}")
    return f"{len(p.results)} slots agree"


def _hash_chain(p: _Parsed, proof: Proof) -> str:
    expected = first_hash_chain(proof.process_id)
    for slot, assignment in enumerate(p.assignments):
        if _tag(assignment, "Hash-Chain") != expected:
            raise CheckFailed(f"slot {slot}: Hash-Chain breaks")
        expected = next_hash_chain(assignment.id, expected)
    return f"unbroken from slot 0 to {len(p.assignments) - 1}"


def _previous_results(p: _Parsed) -> str:
    previous: str | None = None
    for result in p.chain():
        if items.first_tag(result, "Previous-Result") != previous:
            where = (f"cron {_tag(result, 'Cron')} at {_tag(result, 'Timestamp')}"
                     if _tag(result, "Cron") else f"slot {_tag(result, 'Nonce')}")
            raise CheckFailed(f"{where}: Previous-Result does not name the Result evaluated "
                              "before it")
        previous = result.id
    crons = f", {len(p.crons)} cron Results in between" if p.crons else ""
    return f"no gap, no fork{crons}"


def _attestations_named(p: _Parsed) -> str:
    for result in p.chain():
        attestation = p.attestations.get(_tag(result, "Attestation"))
        if attestation is None:
            raise CheckFailed(f"Result {result.id}: its Attestation item is not in the bundle")
        if _tag(attestation, "Type") != "Attestation":
            raise CheckFailed(f"item {attestation.id} is not an Attestation")
    return f"{len(p.attestations)} attestation item(s)"


def _signing_times(p: _Parsed) -> dict[str, list[datetime]]:
    """Attestation id → the times of the Results naming it (their assignments' Timestamp)."""
    times: dict[str, list[datetime]] = {}
    for slot, (result, assignment) in enumerate(zip(p.results, p.assignments, strict=True)):
        try:
            millis = int(_tag(assignment, "Timestamp"))
        except ValueError:
            raise CheckFailed(f"slot {slot}: assignment Timestamp is not an integer") from None
        times.setdefault(_tag(result, "Attestation"), []).append(
            datetime.fromtimestamp(millis / 1000, UTC))
    return times


def _evidence(p: _Parsed, trust: TrustInputs, report: ProofReport) -> str:
    """Each attestation's evidence verifies at the earliest and the latest time of the Results
    naming it (validity windows are intervals: valid at both ends is valid in between)."""
    signing = _signing_times(p)
    for attestation in p.attestations.values():
        try:
            body = json.loads(attestation.data)
            node_key = base64.urlsafe_b64decode(body["node_key"] + "==")
            digest = bytes.fromhex(body["config_digest"])
            nonce = base64.b64decode(body["nonce"])
            evidence = decode_evidence(attestation.data)
        except (ValueError, KeyError, TypeError, AttestationError) as exc:
            raise CheckFailed(f"attestation {attestation.id}: malformed body ({exc})") from None
        if node_key != p.node_key:
            raise CheckFailed(f"attestation {attestation.id} binds another node key")
        binding = report_data(node_key, digest, nonce)
        policy = replace(trust.policy, expected_report_data=binding)
        named = signing.get(attestation.id)
        for when in sorted({min(named), max(named)}) if named else [trust.now]:
            at = f" at {when.isoformat()}, when a Result naming it was signed" if named else ""
            try:
                verified = verify_evidence(
                    evidence, policy, when, certificates=trust.certificates,
                    tdx_collateral=trust.tdx_collateral, allow_emulated=trust.allow_emulated,
                    snp_crls=trust.snp_crls)
            except VerificationFailed as exc:
                hint = ("; pass --allow-emulated to accept it (INSECURE: for tests only)"
                        if isinstance(exc, EmulatedEvidenceRefused) else "")
                raise CheckFailed(f"attestation {attestation.id}{at}: step {exc.step} "
                                  f"({exc.spec}): {exc.reason}{hint}") from None
            except AttestationError as exc:
                raise CheckFailed(f"attestation {attestation.id}{at}: {exc}") from None
        report.emulated = report.emulated or verified.platform is Platform.EMULATED
        report.platform = str(verified.platform)
        report.measurement = verified.measurement.hex()
    return (f"{report.platform} evidence verifies at the times of the Results naming it; "
            f"report_data = SHA-512(prefix, node key, config digest, nonce); measurement "
            f"{report.measurement[:16]}…")


def check_proof(proof: Proof, trust: TrustInputs,
                replay: Callable[[Proof], str] | None = None) -> ProofReport:
    """Run every step on ``proof``; ``replay`` (optional) re-evaluates and returns a detail."""
    report = ProofReport(proof.process_id, proof.message_id)
    box: dict[str, _Parsed] = {}

    def parse() -> str:
        box["p"], detail = _parse_all(proof)
        return detail

    plan: list[tuple[str, Callable[[], str]]] = [
        ("ANS-104 signatures of every item", parse),
        ("one node key signed results, assignments and attestations",
         lambda: _same_signer(box["p"])),
        ("the Result answers the asked message", lambda: _target(box["p"], proof)),
        ("each Result's Message/Nonce/Assignment/Hash-Chain agree with its Assignment",
         lambda: _result_matches_assignment(box["p"], proof)),
        ("assignment hash chain", lambda: _hash_chain(box["p"], proof)),
        ("Previous-Result chain", lambda: _previous_results(box["p"])),
        ("every Result names an Attestation item in the bundle",
         lambda: _attestations_named(box["p"])),
        ("attestation evidence was valid when each Result naming it was signed, and binds "
         "this node key",
         lambda: _evidence(box["p"], trust, report)),
    ]
    if replay is not None:
        plan.append(("replay from slot 0 reproduces every Result byte for byte",
                     lambda: replay(proof)))
    for number, (title, run) in enumerate(plan, start=1):
        try:
            detail = run()
        except CheckFailed as exc:
            report.steps.append(Step(number, title, False, str(exc)))
            return report
        report.steps.append(Step(number, title, True, detail))
    report.result = json.loads(box["p"].results[-1].data)
    return report
