"""Which peers this node accepts pushed items from: their attestations, checked and cached.

A *push* is an item carrying a ``From-Process`` tag whose owner is not this node. It is scheduled
only when its owner is a known peer (:class:`~appliance.network.peers.PeerDirectory`) whose
standing attestation (``GET {url}/attestation``) verifies under the receiver's peer policy
(``network.peer_policy``, the ``attestation verify --policy`` format) and binds the peer's own
key. Emulated evidence is refused unless ``allow_emulated`` (``--allow-emulated-peers``).

Deciding is pure (:func:`judge`, :func:`gate`, :func:`next_check_ms`); :class:`PeerTrust` fetches
attestations on a background thread and keeps the verdicts, so the gate on the ingest path is
a dictionary lookup.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from appliance.ao import items
from appliance.errors import ApplianceError, Overloaded, PeerRefused
from appliance.logfmt import fields
from appliance.network.peers import (
    BACKOFF_FIRST_SECONDS,
    BACKOFF_MAX_SECONDS,
    PeerDirectory,
    PeerUnreachable,
)
from appliance.node.chain import report_data
from attestation.bundle import decode_evidence
from attestation.errors import AttestationError, EmulatedEvidenceRefused, VerificationFailed
from attestation.evidence import Platform
from attestation.facts import evidence_facts
from attestation.policy import Policy
from attestation.tdx.collateral import TdxCollateral
from attestation.verify import verify_evidence

log = logging.getLogger("appliance.trust")

MAX_ATTESTATION_BYTES = 1 << 20
TRUSTED_FOR_SECONDS = 3600.0
"""A trusted verdict is re-checked after this long at most (sooner when evidence expires)."""
REFUSED_FOR_SECONDS = 60.0
"""A refused verdict is re-checked after this long (the peer may have been upgraded)."""
STALE_AFTER_MS = 60_000
"""A trusted verdict this long past its re-check time (the peer's attestation could not be
fetched again) no longer admits pushes."""
PENDING_RETRY_SECONDS = 2.0
"""``Retry-After`` for a push from a peer not checked yet."""
TRUSTED = "trusted"
REFUSALS = ("unknown_peer", "no_policy", "emulated", "policy", "binding", "malformed",
            "unverified")
"""Every refusal reason (the metric's label set); all but ``unverified`` are final."""


class PeerPending(Overloaded):
    """The pushing peer's attestation is not checked yet (or cannot be fetched now): retry."""


@dataclass(frozen=True)
class PeerPolicy:
    """What a peer's attestation must satisfy: ``policy`` (None: no peer policy configured) and
    whether emulated evidence is accepted (tests and laptops only)."""

    policy: Policy | None = None
    allow_emulated: bool = False
    tdx_collateral: TdxCollateral | None = None

    @property
    def trusts_nobody(self) -> bool:
        """True when no attestation can satisfy it (no policy, no emulated opt-in)."""
        return self.policy is None and not self.allow_emulated


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one peer attestation: ``reason`` is ``trusted`` or one of
    :data:`REFUSALS`; ``expires`` is when the evidence's earliest certificate/collateral ends."""

    address: str
    reason: str
    detail: str
    attestation_id: str = ""
    platform: str = ""
    expires: datetime | None = None

    @property
    def trusted(self) -> bool:
        """True when pushes from this peer may be scheduled."""
        return self.reason == TRUSTED


def judge(raw: bytes, address: str, peer_policy: PeerPolicy, now: datetime) -> Verdict:
    """Verify ``raw`` (a peer's standing Attestation item) for the peer ``address`` at ``now``:
    signed by ``address``'s key, its body binds that key (report_data), the evidence verifies
    under ``peer_policy``. Never raises."""
    if peer_policy.trusts_nobody:
        return Verdict(address, "no_policy", "no network.peer_policy and no "
                       "--allow-emulated-peers: no peer is trusted")
    try:
        item = items.parse_verified(raw, MAX_ATTESTATION_BYTES)
    except ApplianceError as exc:
        return Verdict(address, "malformed", f"attestation item: {exc}")
    if items.first_tag(item, "Type") != "Attestation":
        return Verdict(address, "malformed", f"item {item.id} is not an Attestation", item.id)
    if item.owner_address != address:
        return Verdict(address, "binding", f"attestation {item.id} is signed by "
                       f"{item.owner_address}, not by the peer", item.id)
    try:
        body = json.loads(item.data)
        node_key = base64.urlsafe_b64decode(body["node_key"] + "==")
        binding = report_data(node_key, bytes.fromhex(body["config_digest"]),
                              base64.b64decode(body["nonce"]))
        evidence = decode_evidence(item.data)
    except (ValueError, KeyError, TypeError, AttestationError) as exc:
        return Verdict(address, "malformed", f"attestation {item.id}: body ({exc})", item.id)
    platform = str(evidence.platform)
    if node_key != item.owner:
        return Verdict(address, "binding", f"attestation {item.id} binds another node key",
                       item.id, platform)
    emulated = evidence.platform is Platform.EMULATED
    if emulated and not peer_policy.allow_emulated:
        return Verdict(address, "emulated", "emulated evidence; the receiver accepts it only "
                       "with --allow-emulated-peers (network.allow_emulated_peers)", item.id,
                       platform)
    base = peer_policy.policy
    if base is None:
        if not emulated:
            return Verdict(address, "no_policy", "hardware evidence needs a network.peer_policy "
                           "(measurements, TCB)", item.id, platform)
        base = Policy(any_measurement=True)
    try:
        verify_evidence(evidence, replace(base, expected_report_data=binding), now,
                        tdx_collateral=peer_policy.tdx_collateral,
                        allow_emulated=peer_policy.allow_emulated)
    except EmulatedEvidenceRefused as exc:
        return Verdict(address, "emulated", str(exc), item.id, platform)
    except VerificationFailed as exc:
        why = "binding" if "report_data" in exc.reason else "policy"
        return Verdict(address, why, f"attestation {item.id}: {exc}", item.id, platform)
    except AttestationError as exc:
        return Verdict(address, "policy", f"attestation {item.id}: {exc}", item.id, platform)
    try:
        expires = evidence_facts(evidence, peer_policy.tdx_collateral).earliest_expiry
    except AttestationError:
        expires = None
    return Verdict(address, TRUSTED, f"{platform} attestation {item.id} verifies", item.id,
                   platform, expires)


def next_check_ms(verdict: Verdict, now_ms: int) -> int:
    """When to verify the peer again: a trusted verdict after :data:`TRUSTED_FOR_SECONDS` or
    when its evidence expires, whichever is first; a refused one after
    :data:`REFUSED_FOR_SECONDS`."""
    if not verdict.trusted:
        return now_ms + int(REFUSED_FOR_SECONDS * 1000)
    due = now_ms + int(TRUSTED_FOR_SECONDS * 1000)
    if verdict.expires is not None:
        due = min(due, int(verdict.expires.timestamp() * 1000))
    return max(due, now_ms + 1000)


@dataclass(frozen=True)
class TrustState:
    """What this node holds about one peer address: the verdict in force (None until the first
    check), when to check again, and the last fetch problem."""

    address: str
    url: str
    verdict: Verdict | None = None
    due_ms: int = 0
    failures: int = 0
    error: str | None = None
    refusals: int = 0
    last_refusal_ms: int | None = None
    last_refusal: str = ""

    def describe(self) -> dict[str, Any]:
        """JSON for ``GET /`` and ``ctl``."""
        verdict = self.verdict
        return {"address": self.address, "trust": "unverified" if verdict is None else
                (TRUSTED if verdict.trusted else "refused"),
                "reason": verdict.reason if verdict else "unverified",
                "detail": verdict.detail if verdict else (self.error or "not checked yet"),
                "refusals": self.refusals, "last_refusal_ms": self.last_refusal_ms,
                "last_refusal": self.last_refusal}


def after_check(state: TrustState, outcome: Verdict | str, now_ms: int) -> TrustState:
    """The state after one attempt: a verdict (in force until :func:`next_check_ms`), or why
    the fetch failed (a verdict still in force stays; retry with a doubling back-off)."""
    if isinstance(outcome, Verdict):
        return replace(state, verdict=outcome, due_ms=next_check_ms(outcome, now_ms),
                       failures=0, error=None)
    failures = state.failures + 1
    backoff = min(BACKOFF_FIRST_SECONDS * float(2 ** min(failures - 1, 16)), BACKOFF_MAX_SECONDS)
    verdict = state.verdict
    if verdict is not None and verdict.trusted and state.due_ms + STALE_AFTER_MS < now_ms:
        verdict = None  # well past due and unreachable: no longer vouched for
    return replace(state, verdict=verdict, due_ms=now_ms + int(backoff * 1000),
                   failures=failures, error=outcome)


def admits(state: TrustState | None, now_ms: int) -> bool:
    """True when ``state`` holds a trusted verdict still in force (at most
    :data:`STALE_AFTER_MS` past its re-check time)."""
    return (state is not None and state.verdict is not None and state.verdict.trusted
            and state.due_ms + STALE_AFTER_MS >= now_ms)


def gate(owner: str, own_address: str, state: TrustState | None, peers_settled: bool,
         now_ms: int) -> tuple[str, str] | None:
    """None when a push from ``owner`` may be scheduled, else ``(reason, text)``:
    ``unverified`` (retry later) while the peer is not checked yet (or its trusted verdict went
    stale) or not all configured peers are learned; otherwise a final reason from
    :data:`REFUSALS`."""
    if owner == own_address or admits(state, now_ms):
        return None
    if state is None:
        if not peers_settled:
            return "unverified", (f"{owner} is not a known peer yet (peers are still being "
                                  "learned); retry")
        return "unknown_peer", (f"{owner} is not a peer of this node ({own_address}): pushes "
                                "are accepted only from attested peers (network.peers)")
    if state.verdict is None or state.verdict.trusted:
        return "unverified", (f"peer {owner}'s attestation is not verified yet"
                              + (f" ({state.error})" if state.error else "") + "; retry")
    return state.verdict.reason, f"peer {owner} is not trusted: {state.verdict.detail}"


class PeerTrust:
    """Verdicts on the peers of ``directory`` under ``peer_policy``; thread-safe.

    :meth:`start` runs one daemon thread checking each learned peer when due; :meth:`check` is
    one attempt; :meth:`admit` is the gate for one pushed item."""

    def __init__(self, directory: PeerDirectory, peer_policy: PeerPolicy, *,
                 on_refusal: Callable[[str], None] | None = None,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.directory = directory
        self.peer_policy = peer_policy
        self._on_refusal = on_refusal
        self._wall_ms = wall_ms
        self._lock = threading.Lock()
        self._states: dict[str, TrustState] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_refusal = ""

    def announce(self) -> None:
        """Log at start what is trusted: loudly for emulated peers or when nobody can be."""
        if self.peer_policy.allow_emulated:
            log.warning("%s", fields("EMULATED PEERS ACCEPTED", flag="--allow-emulated-peers",
                                     note="pushes from peers without a TEE are scheduled; "
                                          "INSECURE, for tests and laptops only"))
        if self.peer_policy.trusts_nobody and self.directory.peers():
            log.warning("%s", fields("no peer is trusted", peers=len(self.directory.peers()),
                                     note="set network.peer_policy (or --allow-emulated-peers "
                                          "for tests): every push from a peer is refused"))

    # --- checking ------------------------------------------------------------------------

    def check(self, address: str, url: str) -> TrustState:
        """Fetch and judge the attestation of the peer ``address`` at ``url`` once."""
        outcome: Verdict | str
        try:
            raw = self.directory.transport.get_bytes(url + "/attestation")
            outcome = judge(raw, address, self.peer_policy, datetime.now(UTC))
        except PeerUnreachable as exc:
            outcome = str(exc)
        with self._lock:
            old = self._states.get(address) or TrustState(address, url)
            state = after_check(replace(old, url=url), outcome, self._wall_ms())
            self._states[address] = state
        self._log(old, state)
        return state

    @staticmethod
    def _log(old: TrustState, new: TrustState) -> None:
        before, after = old.verdict, new.verdict
        if after is None or (before is not None and before.reason == after.reason):
            if new.error is not None and old.error is None:
                log.warning("%s", fields("peer attestation unreachable", address=new.address,
                                         error=new.error, retry="with back-off"))
            return
        if after.trusted:
            log.info("%s", fields("peer trusted", address=new.address, platform=after.platform,
                                  attestation=after.attestation_id))
        else:
            log.warning("%s", fields("peer refused", address=new.address, reason=after.reason,
                                     detail=after.detail))

    def check_due(self) -> float:
        """Check every learned peer that is due; seconds until the next is due."""
        now = self._wall_ms()
        wait = BACKOFF_MAX_SECONDS
        learned = {p.address for p in self.directory.peers() if p.address is not None}
        with self._lock:  # an address no configured URL answers with any more is forgotten
            for gone in [a for a in self._states if a not in learned]:
                del self._states[gone]
        for peer in self.directory.peers():
            if peer.address is None or peer.location is None:
                continue
            with self._lock:
                state = self._states.get(peer.address)
            if state is None or state.due_ms <= now or state.url != peer.url:
                state = self.check(peer.address, peer.url)
            wait = min(wait, max(0.0, (state.due_ms - self._wall_ms()) / 1000))
        return max(wait, 0.2)

    def start(self) -> None:
        """Start checking peers in the background."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="peer trust")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.check_due()
            except Exception:  # a bug must not end checking for good
                log.exception("checking peer attestations failed")
                wait = BACKOFF_MAX_SECONDS
            self._wake.wait(wait)
            self._wake.clear()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the gate ------------------------------------------------------------------------

    def admit(self, item: items.Item) -> None:
        """Raise :class:`PeerRefused` (or :class:`PeerPending`, retry) unless ``item`` may be
        scheduled: not a push, or a push from a trusted peer. Counts each refusal."""
        if items.first_tag(item, "From-Process") is None:
            return
        owner = item.owner_address
        with self._lock:
            state = self._states.get(owner)
        now_ms = self._wall_ms()
        if owner == self.directory.own_address or admits(state, now_ms):
            return
        peers = self.directory.peers()
        settled = all(p.reachable is not None for p in peers)
        if state is None and any(p.address == owner for p in peers):
            settled = False  # learned but not checked yet
            self._wake.set()
        refusal = gate(owner, self.directory.own_address, state, settled, now_ms)
        if refusal is None:
            return
        reason, text = refusal
        self._refused(owner, reason, text)
        if reason == "unverified":
            self._wake.set()
            raise PeerPending(text, PENDING_RETRY_SECONDS)
        raise PeerRefused(text)

    def _refused(self, owner: str, reason: str, text: str) -> None:
        now = self._wall_ms()
        with self._lock:
            state = self._states.get(owner)
            if state is not None:
                self._states[owner] = replace(state, refusals=state.refusals + 1,
                                              last_refusal_ms=now, last_refusal=reason)
            self.last_refusal = f"{owner}: {reason} at {now}"
        if self._on_refusal is not None:
            self._on_refusal(reason)
        log.info("%s", fields("push refused", owner=owner, reason=reason, detail=text[:300]))

    # --- reading -------------------------------------------------------------------------

    def state(self, address: str) -> TrustState | None:
        """What is held about the peer ``address``."""
        with self._lock:
            return self._states.get(address)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every peer checked so far, by address, as JSON."""
        with self._lock:
            return {a: s.describe() for a, s in self._states.items()}


__all__ = ["REFUSALS", "TRUSTED", "PeerPending", "PeerPolicy", "PeerTrust", "TrustState",
           "Verdict", "admits", "after_check", "gate", "judge", "next_check_ms"]
