"""The node's peers: who they are (address) and where (their ``Scheduler-Location`` record).

Each peer named by ``--peer`` / ``network.peers`` is asked about itself, the way AO's
scheduler-utils asks a gateway: ``GET /`` gives its address, then a GraphQL query for the newest
``Type: Scheduler-Location`` item it owns gives its ``Url`` and ``Time-To-Live`` (milliseconds).
The record is checked (signature, id, owner, tags) before it is believed. One thread per peer
asks again after the record's TTL (capped by ``network.refresh_seconds``), or with a growing
back-off while the peer cannot be reached.

Deciding is pure (:func:`parse_address`, :func:`parse_location`, :func:`after_fetch`,
:func:`next_delay`); the HTTP calls sit behind :class:`Transport`.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from http.client import HTTPException
from typing import Any, Protocol

from appliance.ao import items
from appliance.ao.encoding import b64url_decode
from appliance.errors import ApplianceError, NotFound, NotHosted
from appliance.logfmt import fields
from appliance.network.courier import Route

log = logging.getLogger("appliance.peers")

MAX_URL = 1024
MAX_PEERS = 64
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 5.0
MAX_ANSWER_BYTES = 1 << 20
MAX_TTL_MS = 365 * 24 * 3600 * 1000
LOOKUP_CACHE = 4096
MISS_SECONDS = 10.0
"""A process no peer hosts is not asked about again for this long (bounds peer traffic)."""
INCOMPLETE_MISS_SECONDS = 1.0
"""A miss while some peer could not be asked is remembered this long only (it may host it)."""
LOOKUPS_AT_ONCE = 4
_ID = re.compile(r"[A-Za-z0-9_-]{43}")

LOCATION_QUERY = """query GetSchedulerLocation($owner: String!) {
  transactions(owners: [$owner], tags: [{name: "Data-Protocol", values: ["ao"]},
                                        {name: "Type", values: ["Scheduler-Location"]}],
               sort: HEIGHT_DESC, first: 1) {
    edges { node { id anchor signature recipient owner { address key } data { size }
                   tags { name value } } }
  }
}"""


class BadRecord(ValueError):
    """A peer's answer about itself that cannot be believed (malformed, unsigned, not its own)."""


class PeerUnreachable(Exception):
    """A call to a peer failed (connection, HTTP status, timeout, an answer that is not JSON)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def check_url(text: str) -> str:
    """``text`` as a node's base URL (http or https, a host, no credentials, query or fragment),
    without a trailing slash; ValueError saying what is wrong."""
    if not isinstance(text, str) or not text or len(text) > MAX_URL:
        raise ValueError(f"expected an http(s) URL of at most {MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"URL {text!r} contains spaces or control characters")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL {text!r} must start with http:// or https://")
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if not parts.hostname or not port_ok:
        raise ValueError(f"URL {text!r} needs a host (and a valid port, if any)")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"URL {text!r} must not carry credentials")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"URL {text!r} must not have a query or fragment")
    return text.rstrip("/")


@dataclass(frozen=True)
class Location:
    """A verified ``Scheduler-Location`` record: who (address) is reachable where (url)."""

    address: str
    url: str
    ttl_ms: int
    record_id: str


def parse_address(health: Any) -> str:
    """The node address in a peer's ``GET /`` answer."""
    address = health.get("address") if isinstance(health, dict) else None
    if not isinstance(address, str) or not _ID.fullmatch(address):
        raise BadRecord("GET / did not name a node address")
    return address


def _tag(tags: list[tuple[str, str]], name: str) -> str | None:
    return next((v for n, v in tags if n == name), None)


def item_from_fields(node: dict[str, Any], data: bytes, max_bytes: int) -> items.Item:
    """Rebuild a signed data item from its GraphQL fields (``id anchor signature recipient
    owner { key } data { size } tags``) and its ``data``, and verify it (BadRecord)."""
    try:
        owner = b64url_decode(node["owner"]["key"])
        signature = b64url_decode(node["signature"])
        anchor = b64url_decode(node["anchor"] or "")
        target = b64url_decode(node["recipient"]) if node["recipient"] else b""
        tags = [(str(t["name"]), str(t["value"])) for t in node["tags"]]
        size = node["data"]["size"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRecord(f"record fields malformed ({type(exc).__name__})") from None
    kinds = [k for k, (_, owner_len) in items.SIGNATURE_TYPES.items() if owner_len == len(owner)]
    if len(kinds) != 1 or size != str(len(data)) or len(tags) > items.MAX_TAGS:
        raise BadRecord("item has an unknown key type, a data size other than its data's, or "
                        "too many tags")
    tag_bytes = items.encode_tags(tags)
    raw = b"".join([struct.pack("<H", kinds[0]), signature, owner,
                    b"\1" + target if target else b"\0", b"\1" + anchor if anchor else b"\0",
                    struct.pack("<QQ", len(tags), len(tag_bytes)), tag_bytes, data])
    try:
        return items.parse_verified(raw, max_bytes)
    except ApplianceError as exc:
        raise BadRecord(f"item does not verify: {exc}") from None


def _record_item(node: dict[str, Any]) -> items.Item:
    """The location record (it has no data, so its fields are all of it), verified."""
    return item_from_fields(node, b"", MAX_ANSWER_BYTES)


def parse_location(answer: Any, address: str) -> Location:
    """The newest ``Scheduler-Location`` record of ``address`` in a GraphQL answer (the query
    :data:`LOCATION_QUERY`), checked: signed by ``address``, its id, the AO tags, a ``Url`` and a
    positive integer ``Time-To-Live`` (ms; AO's scheduler-utils caches by it)."""
    try:
        edges = answer["data"]["transactions"]["edges"]
        node = edges[0]["node"] if edges else None
    except (KeyError, TypeError, IndexError):
        raise BadRecord("GraphQL answer has no transactions") from None
    if not isinstance(node, dict):
        raise BadRecord(f"no Scheduler-Location record owned by {address}")
    item = _record_item(node)
    if item.id != node.get("id") or item.owner_address != address:
        raise BadRecord(f"record {str(node.get('id'))[:64]!r} is not {address}'s own")
    if _tag(item.tags, "Data-Protocol") != "ao" or _tag(item.tags, "Type") != "Scheduler-Location":
        raise BadRecord("record lacks Data-Protocol: ao / Type: Scheduler-Location")
    url, ttl = _tag(item.tags, "Url"), _tag(item.tags, "Time-To-Live")
    try:
        url = check_url(url or "")
    except ValueError as exc:
        raise BadRecord(f"record Url: {exc}") from None
    if ttl is None or not (ttl.isascii() and ttl.isdigit()) or len(ttl) > 18 or int(ttl) < 1:
        raise BadRecord(f"record Time-To-Live must be a positive integer (ms), got {ttl!r}")
    return Location(address, url, min(int(ttl), MAX_TTL_MS), item.id)


class Transport(Protocol):
    """JSON over HTTP to a peer; every failure is a :class:`PeerUnreachable`."""

    def get_json(self, url: str) -> Any:
        """``GET url``'s JSON answer."""
        ...

    def post_json(self, url: str, body: Any) -> Any:
        """``POST url`` with a JSON body; its JSON answer."""
        ...

    def get_bytes(self, url: str) -> bytes:
        """``GET url``'s body as bytes (a peer's ``/attestation`` item)."""
        ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # a 3xx is an answer like any other non-200: the peer is misconfigured


class HttpTransport:
    """:class:`Transport` with urllib: direct (no proxy from the environment), no redirects,
    ``timeout`` per call, answers of at most :data:`MAX_ANSWER_BYTES`."""

    def __init__(self, timeout: float = FETCH_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def get_json(self, url: str) -> Any:
        """``GET url``'s JSON answer."""
        return self._call(urllib.request.Request(  # noqa: S310 - _call allows http(s) only
            url, headers={"Accept": "application/json"}))

    def post_json(self, url: str, body: Any) -> Any:
        """``POST url`` with a JSON body; its JSON answer."""
        return self._call(urllib.request.Request(  # noqa: S310 - _call allows http(s) only
            url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"}))

    def get_bytes(self, url: str) -> bytes:
        """``GET url``'s body as bytes (a peer's ``/attestation`` item)."""
        return self._read(urllib.request.Request(  # noqa: S310 - _read allows http(s) only
            url, headers={"Accept": "application/octet-stream"}))

    def _call(self, request: urllib.request.Request) -> Any:
        data = self._read(request)
        try:
            return json.loads(data)
        except ValueError:
            raise PeerUnreachable(f"{request.full_url}: answer is not JSON") from None

    def _read(self, request: urllib.request.Request) -> bytes:
        if request.type not in ("http", "https"):
            raise PeerUnreachable(f"{request.full_url}: not an http(s) URL")
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                data = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise PeerUnreachable(f"HTTP {exc.code} from {request.full_url}", exc.code) from None
        except (OSError, HTTPException, ValueError) as exc:
            why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise PeerUnreachable(f"{request.full_url}: {why}") from None
        if len(data) > MAX_ANSWER_BYTES:
            raise PeerUnreachable(f"{request.full_url}: answer over {MAX_ANSWER_BYTES} bytes")
        return bytes(data)


def fetch_location(transport: Transport, url: str) -> Location:
    """Ask the node at ``url`` who and where it is (PeerUnreachable or BadRecord)."""
    address = parse_address(transport.get_json(url + "/"))
    answer = transport.post_json(url + "/graphql", {"query": LOCATION_QUERY,
                                                    "variables": {"owner": address}})
    return parse_location(answer, address)


@dataclass(frozen=True)
class PeerState:
    """What this node knows of one configured peer."""

    url: str
    location: Location | None = None
    last_seen_ms: int | None = None
    reachable: bool | None = None
    """None until the first attempt ends."""
    error: str | None = None
    failures: int = 0
    """Failed attempts in a row."""

    @property
    def address(self) -> str | None:
        """The peer's node address once learned."""
        return self.location.address if self.location else None

    def describe(self) -> dict[str, Any]:
        """JSON for ``GET /``."""
        loc = self.location
        return {"url": self.url, "address": loc.address if loc else None,
                "location": loc.url if loc else None, "ttl_ms": loc.ttl_ms if loc else None,
                "reachable": self.reachable, "last_seen": self.last_seen_ms, "error": self.error}


def after_fetch(state: PeerState, outcome: Location | str, now_ms: int
                ) -> tuple[PeerState, str | None]:
    """The state after one attempt (a Location, or why it failed) and what to log about it:
    ``learned``, ``replaced`` (another node address answers at the URL), ``moved`` (its record
    names another URL), ``unreachable`` or ``reachable``: each only on a change of state, never
    once per retry."""
    if isinstance(outcome, Location):
        new = replace(state, location=outcome, last_seen_ms=now_ms, reachable=True, error=None,
                      failures=0)
        old = state.location
        if old is None:
            return new, "learned"
        if old.address != outcome.address:
            return new, "replaced"
        if old.url != outcome.url:
            return new, "moved"
        return new, "reachable" if state.reachable is False else None
    new = replace(state, reachable=False, error=outcome, failures=state.failures + 1)
    return new, "unreachable" if state.reachable is not False else None


def next_delay(state: PeerState, refresh_seconds: float) -> float:
    """Seconds until the next attempt: the record's TTL capped by ``refresh_seconds`` after a
    success; a doubling back-off (from :data:`BACKOFF_FIRST_SECONDS`, capped at
    :data:`BACKOFF_MAX_SECONDS` and ``refresh_seconds``) after failures."""
    if state.reachable and state.location is not None:
        return min(state.location.ttl_ms / 1000, refresh_seconds)
    backoff = BACKOFF_FIRST_SECONDS * float(2 ** min(max(state.failures - 1, 0), 16))
    return min(backoff, BACKOFF_MAX_SECONDS, refresh_seconds)


def scheduled_elsewhere(process_id: str, address: str, peer: PeerState | None,
                        own_address: str) -> str:
    """The refusal text for an item whose process another node schedules."""
    if peer is not None and peer.location is not None:
        return (f"process {process_id} is scheduled by node {address} at "
                f"{peer.location.url}; send it there")
    return (f"process {process_id} is scheduled by node {address}, which is not a known peer "
            f"of this node ({own_address}); send it to the URL of {address}'s "
            f"Scheduler-Location record")


class PeerDirectory:
    """The configured peers and what was learned of them; thread-safe.

    :meth:`start` runs one daemon thread per peer; :meth:`refresh` is one attempt (the threads'
    step, callable directly)."""

    def __init__(self, urls: Iterable[str], own_address: str, *,
                 transport: Transport | None = None, refresh_seconds: float = 60.0,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.own_address = own_address
        self.transport: Transport = transport or HttpTransport()
        self.refresh_seconds = refresh_seconds
        self._wall_ms = wall_ms
        self._lock = threading.Lock()
        self._states = {url: PeerState(url) for url in urls}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hosts: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._misses: collections.OrderedDict[str, tuple[float, bool]] = \
            collections.OrderedDict()
        self._lookups = threading.BoundedSemaphore(LOOKUPS_AT_ONCE)

    # --- learning ------------------------------------------------------------------------

    def refresh(self, url: str) -> PeerState:
        """Ask the peer at ``url`` once, record the outcome and log a change of state."""
        outcome: Location | str
        try:
            outcome = fetch_location(self.transport, url)
        except (PeerUnreachable, BadRecord) as exc:
            outcome = str(exc)
        if isinstance(outcome, Location) and outcome.address == self.own_address:
            outcome = f"{url} is this node itself ({self.own_address})"
        with self._lock:
            state, change = after_fetch(self._states[url], outcome, self._wall_ms())
            self._states[url] = state
        self._log(state, change)
        return state

    @staticmethod
    def _log(state: PeerState, change: str | None) -> None:
        loc = state.location
        if change in ("learned", "moved", "reachable") and loc is not None:
            log.info("%s", fields(f"peer {change}", peer=state.url, address=loc.address,
                                  location=loc.url, ttl_ms=loc.ttl_ms))
        elif change == "replaced" and loc is not None:
            log.warning("%s", fields("peer replaced", peer=state.url, address=loc.address,
                                     location=loc.url, ttl_ms=loc.ttl_ms))
        elif change == "unreachable":
            log.warning("%s", fields("peer unreachable", peer=state.url, error=state.error,
                                     retry="with back-off"))

    def start(self) -> None:
        """Start learning every peer in the background."""
        for url in self._states:
            thread = threading.Thread(target=self._run, args=(url,), daemon=True,
                                      name=f"peer {url}"[:60])
            thread.start()
            self._threads.append(thread)

    def _run(self, url: str) -> None:
        while not self._stop.is_set():
            try:
                state = self.refresh(url)
            except Exception:  # a bug must not end learning this peer for good
                log.exception("learning peer %s failed", url)
                state = PeerState(url, reachable=False, failures=8)
            self._stop.wait(next_delay(state, self.refresh_seconds))

    def close(self, timeout: float = 1.0) -> None:
        """Stop the background threads, waiting ``timeout`` in all (a call in flight ends with
        its own timeout; the threads are daemons)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- reading -------------------------------------------------------------------------

    def peers(self) -> list[PeerState]:
        """Every configured peer's state, in configuration order."""
        with self._lock:
            return list(self._states.values())

    def by_address(self, address: str) -> PeerState | None:
        """The peer whose location record ``address`` owns, if learned."""
        return next((p for p in self.peers() if p.address == address), None)

    def locate_process(self, process_id: str) -> PeerState | None:
        """The known peer that hosts ``process_id`` (asked with ``GET /processes/{id}``, which
        a node answers only for processes it schedules), or None. Hits are remembered; a miss is
        not asked about again for :data:`MISS_SECONDS`; at most :data:`LOOKUPS_AT_ONCE` run at
        once (past that: None)."""
        return self.find_host(process_id)[0]

    def find_host(self, process_id: str) -> tuple[PeerState | None, bool]:
        """(:meth:`locate_process`'s answer, whether it is settled): a found peer is, and so
        is a miss when every configured peer was reachable and answered (now, or within
        :data:`MISS_SECONDS`); a miss with a peer unknown or unreachable is not."""
        if not _ID.fullmatch(process_id):
            return None, True
        now = time.monotonic()
        with self._lock:
            host = self._hosts.get(process_id)
            missed = self._misses.get(process_id)
        if host is not None:
            peer = self.by_address(host)
            return peer, peer is not None
        if missed is not None and missed[0] > now:
            return None, missed[1]
        if not self._lookups.acquire(blocking=False):
            return None, False
        try:
            found, complete = self._ask_peers(process_id)
        finally:
            self._lookups.release()
        with self._lock:
            if found is not None and found.address is not None:
                self._hosts[process_id] = found.address
                while len(self._hosts) > LOOKUP_CACHE:
                    self._hosts.popitem(last=False)
            else:
                self._misses[process_id] = (
                    now + (MISS_SECONDS if complete else INCOMPLETE_MISS_SECONDS), complete)
                while len(self._misses) > LOOKUP_CACHE:
                    self._misses.popitem(last=False)
        return found, found is not None or complete

    def forget_host(self, process_id: str) -> None:
        """Drop what is remembered of where ``process_id`` lives (its peer sent it away)."""
        with self._lock:
            self._hosts.pop(process_id, None)
            self._misses.pop(process_id, None)

    def _ask_peers(self, process_id: str) -> tuple[PeerState | None, bool]:
        complete = True
        for peer in self.peers():
            if not peer.reachable or peer.address is None:
                complete = False
                continue
            try:
                answer = self.transport.get_json(f"{peer.url}/processes/{process_id}")
            except PeerUnreachable as exc:
                if exc.status != 404:
                    complete = False
                continue
            if not isinstance(answer, dict) or answer.get("process_id") != process_id:
                continue
            tags = answer.get("tags")
            scheduler = next((t.get("value") for t in (tags if isinstance(tags, list) else [])
                              if isinstance(t, dict) and t.get("name") == "Scheduler"), None)
            if scheduler == peer.address:
                return peer, True
        return None, complete

    def route(self, kind: str, target: str, scheduler: str | None) -> Route:
        """Where the courier pushes an outbox item: a Spawn to the peer its ``Scheduler``
        names, anything else to the peer hosting ``target``."""
        if kind == "spawn":
            peer = self.by_address(scheduler or "")
            if peer is not None and peer.location is not None:
                return Route(url=peer.location.url)
            if any(p.address is None for p in self.peers()):
                return Route()  # maybe a peer not learned yet
            return Route(nowhere=f"scheduler {scheduler} is not a known peer of this node")
        peer, settled = self.find_host(target)
        if peer is not None and peer.location is not None:
            return Route(url=peer.location.url)
        if settled:
            return Route(nowhere=f"no node this one knows hosts {target}")
        return Route()

    def describe(self) -> list[dict[str, Any]]:
        """Every peer as JSON for ``GET /``."""
        return [p.describe() for p in self.peers()]

    # --- refusals ------------------------------------------------------------------------

    def explain(self, raw: bytes, exc: ApplianceError) -> ApplianceError:
        """The refusal to give for ``raw`` instead of ``exc``: a Process whose ``Scheduler`` is
        another node, or a Message to a process a peer hosts, becomes a :class:`NotHosted`
        naming that node (and its URL when it is a known peer); anything else stays ``exc``."""
        if not isinstance(exc, NotHosted | NotFound):
            return exc
        try:
            item = items.parse_unverified(raw)
        except ApplianceError:
            return exc
        kind = items.first_tag(item, "Type")
        if isinstance(exc, NotHosted) and kind == "Process":
            scheduler = items.first_tag(item, "Scheduler")
            if not scheduler:
                return exc
            return NotHosted(scheduled_elsewhere(item.id, scheduler, self.by_address(scheduler),
                                                 self.own_address))
        if isinstance(exc, NotFound) and kind == "Message" and item.target:
            peer = self.locate_process(item.target)
            if peer is not None and peer.address is not None:
                return NotHosted(scheduled_elsewhere(item.target, peer.address, peer,
                                                     self.own_address))
        return exc


__all__ = ["BadRecord", "HttpTransport", "Location", "PeerDirectory", "PeerState",
           "PeerUnreachable", "Transport", "after_fetch", "check_url", "fetch_location",
           "item_from_fields", "next_delay", "parse_address", "parse_location",
           "scheduled_elsewhere"]
