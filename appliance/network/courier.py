"""The courier: pushes outbox items whose target a peer hosts to that peer (issue 14 step 3).

An outbox Message (or a Spawn whose ``Scheduler`` is a peer) that no shard of this node hosts is
recorded ``pending`` in the durable outbox, in the result's transaction. The courier of the
shard holding that outbox reads the ``pending`` rows, asks where each target lives (a
:data:`RouteFn`: the node's peer directory, through the front for a shard in its own process)
and sends the raw item with ``POST {peer}/`` (ANS-104 bytes, ``application/octet-stream``), the
route every node serves as MU/SU; an Assignment is AO's SU assign call,
``POST {peer}/?process-id=TARGET&assign=MESSAGE`` with the message's bytes as the body (the
receiver checks them and assigns the message idempotently). What the answer means is decided
by :func:`verdict`:

* 2xx: ``delivered`` (the receipt is kept as the row's detail);
* 403 and other 4xx except 408/421/429: ``failed`` with the peer's reason; never retried;
* 408/421/429, 5xx, a connection error or no reachable peer yet: retried with a doubling
  back-off (:func:`next_delay`), and the sending process's later items wait behind it, so a
  process's items arrive in order (slot, then outbox index);
* a target no node hosts (a wallet: every aos reply goes to one): ``pending-remote``, final, as
  soon as every peer answered that it does not host it; while some peer cannot be asked it is
  looked up again with the same back-off, for at most :data:`UNROUTED_SECONDS`. The peer
  directory remembers misses, so peers are asked at most once per target per
  :data:`appliance.network.peers.MISS_SECONDS`.

Every state lives in the store (the row's status), so a kill -9 of either side loses nothing:
rows still ``pending`` at start are pushed again, and the receiver answers a push it already
holds with its original receipt (by item id, and by ``Pushed-For`` + ``Reference`` from the same
``From-Process``, as AO's MU de-duplicates), so nothing is scheduled twice.

Deciding is pure (:func:`verdict`, :func:`next_delay`, :func:`heads`); :class:`Courier` is the
thin I/O loop.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Protocol

from appliance.ao import items
from appliance.errors import ApplianceError
from appliance.logfmt import fields
from appliance.node.db.kinds import OutboxStatus
from appliance.node.db.queries import PendingPush

log = logging.getLogger("appliance.courier")

PUSH_TIMEOUT_SECONDS = 10.0
BACKOFF_FIRST_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 30.0
MAX_REASON_CHARS = 500
MAX_ANSWER_BYTES = 1 << 16
BATCH = 256
SETTLE_BATCH = 32
"""Final statuses recorded per transaction. Until its status is stored a delivered row is
pushed again after a crash, which the receiver answers from what it holds (idempotent)."""
UNROUTED_SECONDS = 300.0
"""How long a target is looked up while some peer cannot be asked (down, or not learned yet)
before it is given up as hosted nowhere (``pending-remote``)."""
RETRIED_STATUSES = frozenset({408, 421, 429})


@dataclass(frozen=True)
class Route:
    """Where a target lives: ``url`` (a peer's base URL), or ``nowhere`` (why no node hosts it:
    final), or neither (no peer could be asked yet: retried)."""

    url: str | None = None
    nowhere: str | None = None


RouteFn = Callable[[str, str, str | None], Route]
"""(kind, target, Scheduler tag) -> :class:`Route`."""


@dataclass(frozen=True)
class Verdict:
    """What became of one attempt: a final ``status`` with ``detail``, or retry (status None)."""

    status: OutboxStatus | None
    detail: str


class PushRefused(Exception):
    """A push the peer did not acknowledge: ``status`` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def verdict(outcome: dict[str, Any] | PushRefused) -> Verdict:
    """What a peer's answer to a push means (the agreement in the module docstring)."""
    if isinstance(outcome, dict):
        receipt = {k: outcome[k] for k in ("id", "slot", "timestamp") if k in outcome}
        return Verdict(OutboxStatus.DELIVERED, json.dumps(receipt, sort_keys=True))
    status = outcome.status
    if status is not None and 400 <= status < 500 and status not in RETRIED_STATUSES:
        return Verdict(OutboxStatus.FAILED, f"HTTP {status}: {outcome}"[:MAX_REASON_CHARS])
    return Verdict(None, str(outcome)[:MAX_REASON_CHARS])


def next_delay(failures: int) -> float:
    """Seconds before retrying after ``failures`` failed attempts in a row: doubling from
    :data:`BACKOFF_FIRST_SECONDS`, at most :data:`BACKOFF_MAX_SECONDS` (as peers.next_delay)."""
    backoff = BACKOFF_FIRST_SECONDS * float(2 ** min(max(failures - 1, 0), 16))
    return min(backoff, BACKOFF_MAX_SECONDS)


def heads(rows: Sequence[PendingPush], held: dict[str, float], now: float) -> list[PendingPush]:
    """The rows to attempt now, in order: every pending row of each sending process, except
    processes held (an earlier item waits for a retry until ``held[process]``)."""
    return [row for row in rows if held.get(row.from_process, 0.0) <= now]


class Outbox(Protocol):
    """The store side of the courier (a shard)."""

    def pending_pushes(self, limit: int) -> list[PendingPush]:
        """Outbox rows still ``pending``, in order per sending process."""
        ...

    def settle_pushes(self, settled: list[tuple[PendingPush, OutboxStatus, str]]) -> None:
        """Record the final status of each row, in one transaction (and what follows from it:
        a Spawned notice)."""
        ...




class HttpPoster:
    """``POST {url}/`` of a raw data item over one kept-alive connection per peer (the courier's
    only thread uses it); a connection that fails is dropped and the next push opens a new one."""

    def __init__(self, timeout: float = PUSH_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._connections: dict[str, http.client.HTTPConnection] = {}

    def __call__(self, url: str, raw: bytes, query: str = "") -> dict[str, Any]:
        """``POST {url}/{query}`` with ``raw``; the receipt, or :class:`PushRefused`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PushRefused(f"{url}: not an http(s) URL")
        conn = self._connections.get(url)
        if conn is None:
            kind = (http.client.HTTPSConnection if parts.scheme == "https"
                    else http.client.HTTPConnection)
            conn = self._connections[url] = kind(parts.hostname, parts.port,
                                                 timeout=self.timeout)
        path = (parts.path or "") + "/" + query
        try:
            conn.request("POST", path, body=raw, headers={
                "Content-Type": "application/octet-stream", "Accept": "application/json"})
            answer = conn.getresponse()
            data = answer.read(MAX_ANSWER_BYTES)
            status = answer.status
            if answer.will_close:
                self._drop(url)
        except (OSError, HTTPException, ValueError) as exc:
            self._drop(url)
            raise PushRefused(f"{url}: {exc}") from None
        if not 200 <= status < 300:
            raise PushRefused(_error_text(data) or f"HTTP {status} from {url}", status)
        try:
            receipt = json.loads(data)
        except ValueError:
            raise PushRefused(f"{url}: receipt is not JSON") from None
        if not isinstance(receipt, dict) or not isinstance(receipt.get("id"), str):
            raise PushRefused(f"{url}: receipt names no id")
        return receipt

    def _drop(self, url: str) -> None:
        conn = self._connections.pop(url, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close every kept connection."""
        for url in list(self._connections):
            self._drop(url)


def _error_text(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    error = answer.get("error") if isinstance(answer, dict) else None
    return str(error) if error is not None else ""


class Courier:
    """One thread pushing an outbox's ``pending`` rows to peers (see the module docstring)."""

    def __init__(self, outbox: Outbox, route: RouteFn, *,
                 post: Callable[..., dict[str, Any]] | None = None,
                 name: str = "courier") -> None:
        self._outbox = outbox
        self._route = route
        self._post = post or HttpPoster()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failures: dict[str, int] = {}
        self._held: dict[str, float] = {}
        self._unrouted: dict[str, float] = {}
        self._settled: list[tuple[PendingPush, OutboxStatus, str]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start pushing (rows left ``pending`` by an earlier run included)."""
        self._thread.start()

    def wake(self) -> None:
        """New rows may be pending."""
        self._wake.set()

    def close(self, timeout: float = 2.0) -> None:
        """Stop after the attempt in flight (a push is idempotent on the receiver)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if isinstance(self._post, HttpPoster) and not self._thread.is_alive():
            self._post.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self.round()
            except Exception:  # a bug or a closed store must not end delivery for good
                log.exception("courier round failed")
                wait = BACKOFF_MAX_SECONDS
            self._wake.wait(wait)

    def round(self) -> float:
        """One pass over the pending rows; seconds until the next one is due (without a wake)."""
        rows = self._outbox.pending_pushes(BATCH)
        now = time.monotonic()
        blocked: set[str] = set()
        try:
            for row in heads(rows, self._held, now):
                if self._stop.is_set():
                    break
                if row.from_process in blocked:
                    continue
                if not self._attempt(row):
                    blocked.add(row.from_process)
                if len(self._settled) >= SETTLE_BATCH:
                    self._flush()
        finally:
            self._flush()
        if len(rows) == BATCH and not blocked:
            return 0.0
        due = [until - time.monotonic() for until in self._held.values()]
        return max(0.0, min(due)) if due else 60.0

    def _attempt(self, row: PendingPush) -> bool:
        """Try ``row`` once; False when it is to be retried (its process's later rows wait)."""
        scheduler = _scheduler(row.raw) if row.kind == "spawn" else None
        route = self._route(row.kind, row.target, scheduler)
        if route.url is None:
            if route.nowhere is not None:
                self._settle(row, Verdict(OutboxStatus.PENDING_REMOTE, route.nowhere))
                return True
            first = self._unrouted.setdefault(row.key, time.monotonic())
            if time.monotonic() - first >= UNROUTED_SECONDS:
                self._settle(row, Verdict(
                    OutboxStatus.PENDING_REMOTE,
                    f"no reachable peer hosts {row.target} (looked up for "
                    f"{UNROUTED_SECONDS:.0f} s while some peer could not be asked)"))
                return True
            return self._retry(row, Verdict(None, f"no peer hosting {row.target} reachable"))
        try:
            outcome: dict[str, Any] | PushRefused = (
                self._post(route.url, row.raw, assign_query(row.key)) if row.kind == "assignment"
                else self._post(route.url, row.raw))
        except PushRefused as exc:
            outcome = exc
        decided = verdict(outcome)
        if decided.status is None:
            return self._retry(row, decided)
        self._settle(row, decided)
        return True

    def _flush(self) -> None:
        if self._settled:
            settled, self._settled = self._settled, []
            self._outbox.settle_pushes(settled)

    def _settle(self, row: PendingPush, decided: Verdict) -> None:
        assert decided.status is not None
        self._settled.append((row, decided.status, decided.detail))
        self._failures.pop(row.from_process, None)
        self._held.pop(row.from_process, None)
        self._unrouted.pop(row.key, None)
        if decided.status is not OutboxStatus.DELIVERED:
            log.warning("%s", fields("outbox delivery failed", process=row.from_process,
                                     slot=row.from_slot, item=row.key, kind=row.kind,
                                     target=row.target, status=decided.status,
                                     reason=decided.detail))

    def _retry(self, row: PendingPush, decided: Verdict) -> bool:
        failures = self._failures.get(row.from_process, 0) + 1
        self._failures[row.from_process] = failures
        delay = next_delay(failures)
        self._held[row.from_process] = time.monotonic() + delay
        if failures == 1 or failures % 10 == 0:
            log.warning("%s", fields("push to peer deferred", process=row.from_process,
                                     item=row.key, target=row.target, retry_s=delay,
                                     failures=failures, reason=decided.detail))
        return False


def assign_query(key: str) -> str:
    """The query of AO's SU assign call for the outbox row ``key`` (``message>target``):
    ``?process-id=TARGET&assign=MESSAGE``; the body carries the message's bytes."""
    message_id, _, target = key.partition(">")
    return "?" + urllib.parse.urlencode({"process-id": target, "assign": message_id})


def _scheduler(raw: bytes) -> str | None:
    try:  # the item was verified when it was signed and stored
        return items.first_tag(items.parse_unverified(raw), "Scheduler")
    except ApplianceError:
        return None


__all__ = ["Courier", "HttpPoster", "Outbox", "PushRefused", "Route", "RouteFn", "Verdict",
           "assign_query", "heads", "next_delay", "verdict"]
