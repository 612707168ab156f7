"""Any node is a messenger for any process (issue 14 step 2): forward, relay, fetch modules.

* **Forward.** A client item this node refuses because a peer hosts its process (a Process whose
  ``Scheduler`` is a peer, a Message to a process a peer hosts) is verified, queued durably
  (:class:`~appliance.node.db.forwards.ForwardQueue`), then posted raw to ``POST {peer}/``. The
  client gets the peer's receipt once the peer acknowledged it. When the peer does not answer
  within ``wait_seconds`` (down, slow, 5xx, 408/421/429) the client gets :class:`PeerUnavailable`
  (HTTP 503 + ``Retry-After``) and the item stays queued: a background thread retries it with a
  doubling back-off, after a restart too; posting the same item again is the same forward (same
  id) and answers the peer's receipt once there is one. Any other 4xx is the peer's final word:
  :class:`ForwardRefused` quoting it, not retried.
* **Relay.** A read (result, results, dry-run) about a process a peer hosts is sent to that peer
  and its status and body returned as they are (bounded size and time): Results stay signed by
  the node that computed them.
* **Modules.** :meth:`Forwarder.module` asks peers for a Module item (GraphQL fields, then
  ``GET /raw/{id}`` for the data), rebuilds and verifies it, and checks its id and ``Type``.

Deciding is pure (:func:`outcome_of`, :func:`retry_delay_ms`, :func:`parse_receipt`,
:func:`check_module`); the HTTP calls and the queue are the thin I/O around them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.errors import (
    ApplianceError,
    BadPeerAnswer,
    ForwardRefused,
    NotFound,
    NotHosted,
    PeerUnavailable,
)
from appliance.logfmt import fields
from appliance.network.peers import (
    BadRecord,
    PeerDirectory,
    PeerState,
    PeerUnreachable,
    item_from_fields,
)
from appliance.node.db.forwards import DELIVERED, FAILED, Forward, ForwardQueue
from appliance.node.shard import Receipt

log = logging.getLogger("appliance.forward")

WAIT_SECONDS = 10.0
"""How long a client waits for the peer's receipt before 503 (the item stays queued)."""
RELAY_TIMEOUT_SECONDS = 30.0
MAX_RELAY_BYTES = 8 << 20
RETRY_FIRST_MS = 500
RETRY_MAX_MS = 60_000
RETRY_AFTER_SECONDS = 2.0
SWEEP_SECONDS = 0.5
SWEEP_BATCH = 64
SETTLED_KEEP_MS = 7 * 24 * 3600 * 1000
"""A delivered or refused forward's row (its receipt or refusal, without the item's bytes) is
kept this long after it was queued, then deleted."""
PRUNE_EVERY_SECONDS = 60.0
GIVE_UP_MS = 24 * 3600 * 1000
"""A forward still not acknowledged this long after it was queued is marked ``failed`` at its
next failed attempt (the client stopped waiting long ago; the queue stays bounded)."""
MAX_PENDING = 10_000
MAX_PENDING_BYTES = 1 << 30
"""Items waiting for peers that do not answer, at most (past either: 503, nothing queued)."""
FINAL_4XX_EXCEPT = (408, 421, 429)
FORWARDED_HEADER = "AO-Forwarded-By"
"""Sent with every forward and relay (this node's address): the receiving node answers such a
request itself and never passes it on, so stale lookups cannot bounce an item between nodes."""
MODULE_QUERY = """query GetModule($id: ID!) {
  transactions(ids: [$id], first: 1) {
    edges { node { id anchor signature recipient owner { address key } data { size }
                   tags { name value } } }
  }
}"""


# --- pure decisions ------------------------------------------------------------------------


def outcome_of(status: int | None) -> str:
    """What an answer status means for a forwarded item: ``delivered`` (2xx), ``final`` (a 4xx
    other than 408/421/429: the peer refuses it for good) or ``retry`` (5xx, those three, no
    answer at all: ``None``)."""
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status is not None and 400 <= status < 500 and status not in FINAL_4XX_EXCEPT:
        return "final"
    return "retry"


def retry_delay_ms(attempts: int) -> int:
    """Milliseconds before the next attempt after ``attempts`` failed ones (doubling, capped)."""
    return int(min(RETRY_FIRST_MS * 2 ** min(max(attempts - 1, 0), 16), RETRY_MAX_MS))


def parse_receipt(body: bytes, item_id: str, peer_url: str) -> dict[str, Any]:
    """The peer's receipt JSON for ``item_id`` (an object with that ``id``, an integer
    ``timestamp`` and, if any, an integer ``slot``); BadPeerAnswer otherwise."""
    try:
        receipt = json.loads(body)
    except ValueError:
        receipt = None
    if (not isinstance(receipt, dict) or receipt.get("id") != item_id
            or not isinstance(receipt.get("timestamp"), int)
            or not isinstance(receipt.get("slot", 0), int)):
        raise BadPeerAnswer(f"peer {peer_url} acknowledged item {item_id} with an answer that "
                            "is not its receipt")
    return receipt


def receipt_of(item: items.Item, receipt: dict[str, Any], peer_url: str) -> Receipt:
    """The :class:`Receipt` a client gets for ``item`` that ``peer_url`` acknowledged."""
    kind = items.first_tag(item, "Type") or "Message"
    process = item.id if kind == "Process" else item.target or None
    return Receipt(item.id, kind, process, receipt.get("slot"), receipt.get("warning"),
                   timestamp_ms=receipt["timestamp"], forwarded_to=peer_url)


def check_module(node: Any, data: bytes, module_id: str, peer_url: str,
                 max_bytes: int) -> items.Item:
    """The Module item ``module_id`` rebuilt from a peer's GraphQL ``node`` and ``data``:
    signed, with that id, ``Type: Module``; BadPeerAnswer naming the peer otherwise."""
    if not isinstance(node, dict):
        raise BadPeerAnswer(f"peer {peer_url} answered no item fields for module {module_id}")
    try:
        item = item_from_fields(node, data, max_bytes)
    except BadRecord as exc:
        raise BadPeerAnswer(f"module {module_id} from peer {peer_url}: {exc}") from None
    if item.id != module_id:
        raise BadPeerAnswer(f"peer {peer_url} answered item {item.id} for module {module_id}")
    if items.first_tag(item, "Type") != "Module":
        raise BadPeerAnswer(f"item {module_id} from peer {peer_url} is not a Module item")
    return item


# --- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A peer's HTTP answer: status, content type, body."""

    status: int
    content_type: str
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def call(method: str, url: str, body: bytes | None, content_type: str, timeout: float,
         max_bytes: int, forwarded_by: str = "") -> Answer:
    """One HTTP call to a peer (``forwarded_by``: this node's address, sent as
    :data:`FORWARDED_HEADER`); any status is an :class:`Answer`. PeerUnavailable when no
    answer came in ``timeout``; BadPeerAnswer for a body over ``max_bytes``."""
    if not url.startswith(("http://", "https://")):
        raise PeerUnavailable(f"{url}: not an http(s) URL", RETRY_AFTER_SECONDS)
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    if forwarded_by:
        headers[FORWARDED_HEADER] = forwarded_by
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            status, kind = int(answer.status), answer.headers.get("Content-Type", "")
            data = answer.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        with exc:
            status, kind = exc.code, exc.headers.get("Content-Type", "")
            data = exc.read(max_bytes + 1)
    except (OSError, HTTPException, ValueError) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise PeerUnavailable(f"{url}: {why}", RETRY_AFTER_SECONDS) from None
    if len(data) > max_bytes:
        raise BadPeerAnswer(f"{url}: answer over {max_bytes} bytes")
    return Answer(status, kind or "application/octet-stream", data)


def _error_text(answer: Answer) -> str:
    try:
        text = json.loads(answer.body).get("error")
    except (ValueError, AttributeError):
        text = None
    return str(text if text else answer.body[:200].decode("utf-8", "replace"))[:500]


# --- the forwarder -------------------------------------------------------------------------


class Forwarder:
    """The :class:`~appliance.node.routing.PeerRouter` of a serving node: forward queue over
    ``data_dir``, relays and module fetches through ``peers``. :meth:`start` runs the
    background retry thread."""

    def __init__(self, peers: PeerDirectory, data_dir: Path, *, max_item_bytes: int,
                 wait_seconds: float = WAIT_SECONDS,
                 relay_timeout_seconds: float = RELAY_TIMEOUT_SECONDS,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.peers = peers
        self.queue = ForwardQueue(data_dir)
        self.max_item_bytes = max_item_bytes
        self.wait_seconds = wait_seconds
        self.relay_timeout_seconds = relay_timeout_seconds
        self._wall_ms = wall_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- forwarding ------------------------------------------------------------------------

    def destination(self, item: items.Item, refusal: ApplianceError) -> PeerState | None:
        """The peer that hosts ``item``'s process, as far as this node can tell."""
        kind = items.first_tag(item, "Type")
        if isinstance(refusal, NotHosted) and kind == "Process":
            peer = self.peers.by_address(items.first_tag(item, "Scheduler") or "")
        elif isinstance(refusal, NotFound) and kind == "Message" and item.target:
            peer = self.peers.locate_process(item.target)
        else:
            return None
        return peer if peer is not None and peer.location is not None else None

    def forward(self, raw: bytes, refusal: ApplianceError) -> Receipt:
        """See :meth:`~appliance.node.routing.PeerRouter.forward`."""
        try:
            item = items.parse_verified(raw, self.max_item_bytes)
        except ApplianceError:
            raise refusal from None
        peer = self.destination(item, refusal)
        if peer is None or peer.location is None:
            raise self.peers.explain(raw, refusal)
        row = self.queue.add(item.id, peer.location.url, raw, self._wall_ms(),
                             max_pending=MAX_PENDING, max_pending_bytes=MAX_PENDING_BYTES)
        if row.status == DELIVERED and row.receipt is not None:
            return receipt_of(item, json.loads(row.receipt), row.peer_url)
        if row.status == FAILED:
            raise ForwardRefused(f"node {peer.address} at {row.peer_url} refused item "
                                 f"{item.id}: {row.error}")
        receipt = self._attempt(row, self.wait_seconds)
        if receipt is None:
            again = self.queue.get(item.id)
            if again.status == FAILED:
                raise ForwardRefused(f"node {peer.address} at {row.peer_url} did not take item "
                                     f"{item.id}: {again.error}")
            raise PeerUnavailable(
                f"node {peer.address} at {row.peer_url}, which hosts the process, did not "
                f"acknowledge item {item.id} ({again.error}); this node queued it and keeps "
                "retrying: post the same item again for its receipt", RETRY_AFTER_SECONDS)
        return receipt_of(item, receipt, row.peer_url)

    def _attempt(self, row: Forward, timeout: float) -> dict[str, Any] | None:
        """One delivery attempt of ``row``: the receipt, None to retry later (recorded), or
        ForwardRefused (recorded as failed)."""
        try:
            answer = call("POST", row.peer_url + "/", row.raw, "application/octet-stream",
                          timeout, 64 * 1024, self.peers.own_address)
        except (PeerUnavailable, BadPeerAnswer) as exc:
            return self._later(row, str(exc))
        verdict = outcome_of(answer.status)
        if verdict == "delivered":
            try:
                receipt = parse_receipt(answer.body, row.item_id, row.peer_url)
            except BadPeerAnswer as exc:
                return self._later(row, str(exc))
            self.queue.delivered(row.item_id, json.dumps(receipt))
            log.info("%s", fields("forwarded", item=row.item_id, peer=row.peer_url,
                                  attempts=row.attempts + 1))
            return receipt
        why = f"HTTP {answer.status}: {_error_text(answer)}"
        if verdict == "final":
            self.queue.failed(row.item_id, why)
            log.warning("%s", fields("forward refused", item=row.item_id, peer=row.peer_url,
                                     error=why))
            raise ForwardRefused(f"node at {row.peer_url} refused item {row.item_id}: {why}")
        return self._later(row, why)

    def _later(self, row: Forward, why: str) -> dict[str, Any] | None:
        now = self._wall_ms()
        if now - row.queued_ms >= GIVE_UP_MS:
            why = f"not acknowledged within {GIVE_UP_MS // 3_600_000} h ({why})"
            self.queue.failed(row.item_id, why)
            log.warning("%s", fields("forward given up", item=row.item_id, peer=row.peer_url,
                                     attempts=row.attempts + 1, error=why))
            return None
        self.queue.retry_at(row.item_id, why, now + retry_delay_ms(row.attempts + 1))
        if row.attempts == 0:
            log.warning("%s", fields("forward pending", item=row.item_id, peer=row.peer_url,
                                     error=why, retry="with back-off"))
        return None

    def sweep(self) -> int:
        """Attempt every due pending forward once; how many were delivered."""
        delivered = 0
        for row in self.queue.due(self._wall_ms(), SWEEP_BATCH):
            try:
                delivered += self._attempt(row, self.wait_seconds) is not None
            except ForwardRefused:
                continue
        return delivered

    def forwards_by_status(self) -> dict[str, int]:
        """See :meth:`~appliance.node.routing.PeerRouter.forwards_by_status`."""
        return self.queue.by_status()

    def start(self) -> None:
        """Retry pending forwards in the background (queued before a restart too)."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="forwarder")
        self._thread.start()

    def prune(self) -> int:
        """Delete settled rows older than :data:`SETTLED_KEEP_MS`; how many went."""
        return self.queue.prune(self._wall_ms() - SETTLED_KEEP_MS, 10 * SWEEP_BATCH)

    def _run(self) -> None:
        pruned_at = 0.0
        while not self._stop.wait(SWEEP_SECONDS):
            try:
                self.sweep()
                if time.monotonic() - pruned_at >= PRUNE_EVERY_SECONDS:
                    pruned_at = time.monotonic()
                    self.prune()
            except Exception:  # a bug must not end retrying for good
                log.exception("forward sweep failed")

    def close(self, timeout: float = 2.0) -> None:
        """Stop the retry thread and close the queue."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return  # an attempt in flight ends with its own timeout; the file stays open
        self.queue.close()

    # --- relays and modules ----------------------------------------------------------------

    def host_of(self, process_id: str) -> PeerState | None:
        """The peer hosting ``process_id`` (None: no known peer does)."""
        peer = self.peers.locate_process(process_id)
        return peer if peer is not None and peer.location is not None else None

    def relay(self, peer: PeerState, method: str, path_qs: str, body: bytes | None) -> Answer:
        """``method path_qs`` sent to ``peer``; its answer as it is (PeerUnavailable naming the
        peer when it does not answer)."""
        assert peer.location is not None
        url = peer.location.url + path_qs
        try:
            return call(method, url, body, "application/json", self.relay_timeout_seconds,
                        MAX_RELAY_BYTES, self.peers.own_address)
        except PeerUnavailable as exc:
            raise PeerUnavailable(f"node {peer.address} hosts the process but did not answer: "
                                  f"{exc}", RETRY_AFTER_SECONDS) from None

    def module(self, module_id: str) -> bytes | None:
        """See :meth:`~appliance.node.routing.PeerRouter.module`: the first peer that has it."""
        for peer in self.peers.peers():
            if not peer.reachable or peer.location is None:
                continue
            url = peer.location.url
            try:
                found = self.peers.transport.post_json(
                    url + "/graphql", {"query": MODULE_QUERY, "variables": {"id": module_id}})
                edges = found["data"]["transactions"]["edges"]
            except (PeerUnreachable, KeyError, TypeError) as exc:  # try the next peer
                log.warning("%s", fields("module lookup failed", peer=url, error=str(exc)))
                continue
            if not isinstance(edges, list) or not edges:
                continue
            node = edges[0].get("node") if isinstance(edges[0], dict) else None
            if not isinstance(node, dict) or node.get("id") != module_id:
                raise BadPeerAnswer(f"peer {url} answered another item for module {module_id}")
            data = call("GET", f"{url}/raw/{module_id}", None, "application/json",
                        self.relay_timeout_seconds, self.max_item_bytes)
            if data.status != 200:
                raise BadPeerAnswer(f"peer {url} lists module {module_id} but GET /raw answered "
                                    f"HTTP {data.status}")
            item = check_module(node, data.body, module_id, url, self.max_item_bytes)
            log.info("%s", fields("module fetched", module=module_id, peer=url,
                                  bytes=len(item.data)))
            return item.raw
        return None


__all__ = ["FORWARDED_HEADER", "Answer", "Forwarder", "call", "check_module", "outcome_of",
           "parse_receipt", "receipt_of", "retry_delay_ms"]
