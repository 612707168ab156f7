"""The pure peer-trust decisions: :func:`judge` on real attestation items (emulated ones made by
the emulated provider, a real SEV-SNP report from the shared vectors), :func:`gate`,
:func:`after_check` and :func:`next_check_ms`."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.ao.encoding import b64url
from appliance.errors import PeerRefused
from appliance.network.peers import HttpTransport, PeerDirectory
from appliance.network.trust import (
    REFUSALS,
    REFUSED_FOR_SECONDS,
    STALE_AFTER_MS,
    TRUSTED_FOR_SECONDS,
    PeerPending,
    PeerPolicy,
    PeerTrust,
    TrustState,
    Verdict,
    after_check,
    gate,
    judge,
    next_check_ms,
)
from appliance.node.attest import make_attestation
from appliance.node.identity import NodeIdentity
from attestation.policy import Policy, SnpPolicy
from attestation.policy_file import load_policy
from attestation.providers.emulated import EMULATED_MEASUREMENT, EmulatedProvider

DIGEST = bytes(range(32))
OTHER_MEASUREMENT = "ab" * 48


def _peer(tmp_path: Path, name: str = "peer") -> tuple[NodeIdentity, bytes]:
    identity = NodeIdentity.load_or_create(tmp_path / name)
    provider = EmulatedProvider(tmp_path / f"{name}-tee")
    return identity, make_attestation(identity, provider, DIGEST, b"nonce").raw


def _now() -> datetime:
    return datetime.now(UTC)


def test_emulated_peer_is_trusted_only_with_the_flag(tmp_path: Path) -> None:
    identity, raw = _peer(tmp_path)
    verdict = judge(raw, identity.address, PeerPolicy(allow_emulated=True), _now())
    assert verdict.trusted and verdict.platform == "emulated", verdict
    assert verdict.expires is not None  # the emulated certificates' end
    refused = judge(raw, identity.address, PeerPolicy(Policy(any_measurement=True)), _now())
    assert (refused.trusted, refused.reason) == (False, "emulated")
    assert "--allow-emulated-peers" in refused.detail
    nobody = judge(raw, identity.address, PeerPolicy(), _now())
    assert nobody.reason == "no_policy"


def test_policy_measurements_apply_to_emulated_peers_too(tmp_path: Path) -> None:
    identity, raw = _peer(tmp_path)
    good = load_policy(f"allowed_measurements: [{EMULATED_MEASUREMENT.hex()}]\n", "good.yaml")
    bad = load_policy(f"allowed_measurements: [{OTHER_MEASUREMENT}]\n", "bad.yaml")
    assert judge(raw, identity.address, PeerPolicy(good, True), _now()).trusted
    refused = judge(raw, identity.address, PeerPolicy(bad, True), _now())
    assert refused.reason == "policy" and "measurement" in refused.detail, refused


def test_an_attestation_must_be_the_peers_own(tmp_path: Path) -> None:
    identity, raw = _peer(tmp_path)
    other, _ = _peer(tmp_path, "other")
    rules = PeerPolicy(allow_emulated=True)
    assert judge(raw, other.address, rules, _now()).reason == "binding"
    # the peer re-signs another node's attestation body: the body binds another key
    _, foreign = _peer(tmp_path, "third")
    body = items.parse_verified(foreign, 1 << 20)
    resigned = items.sign(identity, tags=body.tags, data=body.data).raw
    verdict = judge(resigned, identity.address, rules, _now())
    assert verdict.reason == "binding" and "another node key" in verdict.detail
    # its own key in the body, but evidence made for another key: report_data differs
    data = json.loads(body.data)
    data["node_key"] = b64url(identity.public_key)
    forged = items.sign(identity, tags=body.tags, data=json.dumps(data).encode()).raw
    verdict = judge(forged, identity.address, rules, _now())
    assert verdict.reason == "binding" and "report_data" in verdict.detail, verdict


def test_malformed_attestations_are_refused_not_raised(tmp_path: Path) -> None:
    identity, _ = _peer(tmp_path)
    rules = PeerPolicy(allow_emulated=True)
    assert judge(b"not an item", identity.address, rules, _now()).reason == "malformed"
    other = items.sign(identity, tags=[("Type", "Message")], data=b"{}").raw
    assert judge(other, identity.address, rules, _now()).reason == "malformed"
    empty = items.sign(identity, tags=[("Type", "Attestation")], data=b"{}").raw
    assert judge(empty, identity.address, rules, _now()).reason == "malformed"


def test_real_snp_report_not_bound_to_the_peer_is_refused(tmp_path: Path,
                                                           vectors: Path) -> None:
    """A genuine Milan report (valid chain, verifies in tests/attestation) carried by a peer
    whose key it does not bind: refused at the binding, not trusted for being real."""
    snp = vectors / "sev-snp"
    chain = [(snp / "vcek.testcer").read_bytes(), (snp / "amd-roots" / "ask_ark_milan.pem")
             .read_bytes()]
    identity = NodeIdentity.load_or_create(tmp_path / "peer")
    body = {"platform": "sev-snp",
            "evidence": base64.b64encode((snp / "attestation.bin").read_bytes()).decode(),
            "certificates": [c.decode("ascii") if c.lstrip().startswith(b"-----BEGIN")
                             else base64.b64encode(c).decode() for c in chain],
            "node_key": b64url(identity.public_key), "config_digest": DIGEST.hex(),
            "nonce": base64.b64encode(b"nonce").decode()}
    raw = items.sign(identity, tags=[("Data-Protocol", "ao"), ("Type", "Attestation"),
                                     ("TEE-Platform", "sev-snp")],
                     data=json.dumps(body).encode()).raw
    when = datetime(2025, 1, 1, tzinfo=UTC)
    lenient = Policy(any_measurement=True, snp=SnpPolicy(allow_debug=True))
    verdict = judge(raw, identity.address, PeerPolicy(lenient), when)
    assert verdict.reason == "binding" and "report_data" in verdict.detail, verdict
    assert verdict.platform == "sev-snp"
    # hardware evidence with only the emulated opt-in: a policy is required
    assert judge(raw, identity.address, PeerPolicy(allow_emulated=True), when).reason \
        == "no_policy"


def test_gate_decides_pushes() -> None:
    own, peer, now = "o" * 43, "p" * 43, 1_000_000_000
    trusted = TrustState(peer, "http://p", Verdict(peer, "trusted", "ok"), due_ms=now + 1)
    refused = TrustState(peer, "http://p", Verdict(peer, "emulated", "emulated evidence"))
    assert gate(own, own, None, True, now) is None  # the node's own items always pass
    assert gate(peer, own, trusted, True, now) is None
    assert gate(peer, own, refused, True, now) == (
        "emulated", f"peer {peer} is not trusted: emulated evidence")
    reasons = [gate(peer, own, None, True, now), gate(peer, own, None, False, now),
               gate(peer, own, TrustState(peer, "http://p"), True, now),
               gate(peer, own, trusted, True, now + STALE_AFTER_MS + 2)]  # stale: recheck
    assert [r[0] if r else None for r in reasons] == ["unknown_peer", "unverified", "unverified",
                                                      "unverified"]
    assert set(REFUSALS) >= {"unknown_peer", "emulated", "policy", "binding", "unverified"}


def test_verdicts_expire_and_fetch_failures_back_off() -> None:
    peer, now_ms = "p" * 43, 1_000_000_000
    soon = datetime.fromtimestamp(now_ms / 1000, UTC) + timedelta(seconds=90)
    trusted = Verdict(peer, "trusted", "ok", expires=soon)
    assert next_check_ms(trusted, now_ms) == now_ms + 90_000  # evidence expiry first
    assert next_check_ms(Verdict(peer, "trusted", "ok"), now_ms) == \
        now_ms + int(TRUSTED_FOR_SECONDS * 1000)
    assert next_check_ms(Verdict(peer, "policy", "no"), now_ms) == \
        now_ms + int(REFUSED_FOR_SECONDS * 1000)
    state = after_check(TrustState(peer, "http://p"), trusted, now_ms)
    assert state.verdict == trusted and state.failures == 0
    failed = after_check(state, "connection refused", now_ms + 1000)
    assert failed.verdict == trusted and failed.error == "connection refused"  # still in force
    again = after_check(failed, "connection refused", now_ms + 2000)
    assert again.due_ms - (now_ms + 2000) == 2 * (failed.due_ms - (now_ms + 1000))
    late = after_check(again, "connection refused", state.due_ms + 61_000)
    assert late.verdict is None  # long past due and unreachable: no longer vouched for


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nobody listens once closed


def test_admit_waits_for_peers_then_refuses_strangers(tmp_path: Path) -> None:
    own, _ = _peer(tmp_path, "own")
    stranger, _ = _peer(tmp_path, "stranger")
    url = _closed_url()
    directory = PeerDirectory([url], own.address, transport=HttpTransport(timeout=30))
    refusals: list[str] = []
    trust = PeerTrust(directory, PeerPolicy(allow_emulated=True), on_refusal=refusals.append)

    def push(signer: NodeIdentity, tags: list[tuple[str, str]]) -> items.Item:
        return items.sign(signer, target="q" * 43, data=b"1", tags=[("Type", "Message"), *tags])

    trust.admit(push(stranger, []))  # not a push: never gated
    trust.admit(push(own, [("From-Process", "f" * 43)]))  # this node's own: always trusted
    with pytest.raises(PeerPending) as pending:
        trust.admit(push(stranger, [("From-Process", "f" * 43)]))  # peer not asked yet
    assert pending.value.retry_after > 0
    assert directory.refresh(url).reachable is False  # the configured peer is down
    with pytest.raises(PeerRefused, match="not a peer of this node"):
        trust.admit(push(stranger, [("From-Process", "f" * 43)]))
    assert refusals == ["unverified", "unknown_peer"]
    assert trust.last_refusal.startswith(f"{stranger.address}: unknown_peer at ")
