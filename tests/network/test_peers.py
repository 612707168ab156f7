"""Peering step 1: the Scheduler-Location record's checks, the learning state machine, the
refusals that name another node, and the real fetch against a real node on loopback."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from appliance.ao import items
from appliance.ao.encoding import b64url
from appliance.errors import NotFound, NotHosted
from appliance.network.peers import (
    BACKOFF_MAX_SECONDS,
    MAX_TTL_MS,
    BadRecord,
    HttpTransport,
    Location,
    PeerDirectory,
    PeerState,
    PeerUnreachable,
    after_fetch,
    check_url,
    fetch_location,
    next_delay,
    parse_address,
    parse_location,
)
from appliance.node.identity import NodeIdentity
from appliance.rpc.servicer import OperatorService
from attestation.providers import EmulatedProvider
from tests.integration.inproc import serve_in_thread
from tests.rpc.support import make_node

WEEK_MS = str(7 * 24 * 3600 * 1000)


def _record(key: NodeIdentity, url: str = "http://127.0.0.1:9000", ttl: str | None = WEEK_MS,
            extra: tuple[tuple[str, str], ...] = ()) -> items.Item:
    tags = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Scheduler-Location"),
            ("Url", url), *([("Time-To-Live", ttl)] if ttl is not None else []), *extra]
    return items.sign(key, tags=tags, anchor=hashlib.sha256(url.encode()).digest())


def _node(item: items.Item) -> dict[str, Any]:
    """The record as a gateway's GraphQL answers it (the fields LOCATION_QUERY asks for)."""
    return {"id": item.id, "anchor": b64url(item.anchor), "signature": b64url(item.signature),
            "recipient": item.target, "owner": {"address": item.owner_address,
                                                "key": b64url(item.owner)},
            "data": {"size": str(len(item.data))},
            "tags": [{"name": n, "value": v} for n, v in item.tags]}


def _answer(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"transactions": {"edges": [{"node": n} for n in nodes]}}}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[NodeIdentity, NodeIdentity]:
    base = tmp_path_factory.mktemp("keys")
    return NodeIdentity.load_or_create(base / "a"), NodeIdentity.load_or_create(base / "b")


def test_a_good_record_gives_url_and_ttl(keys: tuple[NodeIdentity, NodeIdentity]) -> None:
    key = keys[0]
    item = _record(key, "https://node.example.org/ao/")
    location = parse_location(_answer(_node(item)), key.address)
    assert location == Location(key.address, "https://node.example.org/ao", int(WEEK_MS), item.id)
    huge = _record(key, ttl=str(10**17))
    assert parse_location(_answer(_node(huge)), key.address).ttl_ms == MAX_TTL_MS


@pytest.mark.parametrize("ttl", [None, "0", "-5", "1.5", "abc", "", "1" * 19, "١٢"])
def test_bad_time_to_live_is_refused(keys: tuple[NodeIdentity, NodeIdentity],
                                     ttl: str | None) -> None:
    with pytest.raises(BadRecord, match="Time-To-Live"):
        parse_location(_answer(_node(_record(keys[0], ttl=ttl))), keys[0].address)


def test_bad_records_are_refused(keys: tuple[NodeIdentity, NodeIdentity]) -> None:
    a, b = keys
    good = _node(_record(a))
    tampered = {**good, "tags": [*good["tags"][:3], {"name": "Url", "value": "http://evil:1"},
                                 *good["tags"][4:]]}
    cases: list[tuple[Any, str]] = [
        (_answer(tampered), "does not verify"),
        (_answer(_node(_record(b))), "not .*own"),  # b's record offered as a's
        (_answer({**good, "id": _record(a, "http://b:2").id}), "not .*own"),  # another id
        (_answer(_node(_record(a, url="ftp://x"))), "Url"),
        (_answer(_node(_record(a, url="http://u:p@host"))), "Url"),
        (_answer({**good, "data": {"size": "3"}}), "data"),
        (_answer({**good, "owner": {"key": "AAAA"}}), "key type"),
        (_answer({**good, "signature": None}), "malformed"),
        (_answer(), "no Scheduler-Location record"),
        ({"data": None, "errors": [{"message": "x"}]}, "no transactions"),
        ("not json object", "no transactions"),
    ]
    for answer, why in cases:
        with pytest.raises(BadRecord, match=why):
            parse_location(answer, a.address)
    wrong_type = _record(a, extra=())
    node = _node(wrong_type)
    node["tags"] = [t for t in node["tags"] if t["name"] != "Type"]
    with pytest.raises(BadRecord):  # the signature covers the tags: any edit fails
        parse_location(_answer(node), a.address)


def test_parse_address() -> None:
    assert parse_address({"address": "a" * 43}) == "a" * 43
    for bad in ({}, {"address": "short"}, {"address": "a" * 42 + "/"}, [], None):
        with pytest.raises(BadRecord):
            parse_address(bad)


def test_check_url() -> None:
    assert check_url("http://127.0.0.1:8734/") == "http://127.0.0.1:8734"
    assert check_url("https://[::1]:443/ao") == "https://[::1]:443/ao"
    for bad in ("", "127.0.0.1:8734", "ftp://host", "http://", "http://host:99999",
                "http://host:0", "http://user@host", "http://host/?q=1", "http://host/#x",
                "http://ho st", "http://host/\n", "https://" + "a" * 1100):
        with pytest.raises(ValueError, match="URL"):
            check_url(bad)


def test_state_changes_are_reported_once() -> None:
    loc = Location("a" * 43, "http://a:1", 5000, "r" * 43)
    state = PeerState("http://a:1")
    assert next_delay(state, 60) == 0.5
    state, change = after_fetch(state, "refused", 1)
    assert change == "unreachable" and state.failures == 1 and state.reachable is False
    delays = []
    for n in range(2, 12):
        state, change = after_fetch(state, f"refused {n}", n)
        assert change is None  # once per state change, not per retry
        delays.append(next_delay(state, 60))
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == BACKOFF_MAX_SECONDS
    assert next_delay(state, 10) == 10
    state, change = after_fetch(state, loc, 100)
    assert change == "learned" and state.last_seen_ms == 100 and state.failures == 0
    assert next_delay(state, 60) == 5.0  # the record's TTL, capped by refresh_seconds
    assert next_delay(state, 2) == 2
    state, change = after_fetch(state, loc, 200)
    assert change is None and state.last_seen_ms == 200
    state, change = after_fetch(state, "timed out", 300)
    assert change == "unreachable" and state.location == loc  # what was learned stays known
    state, change = after_fetch(state, loc, 400)
    assert change == "reachable"
    moved = Location(loc.address, "http://b:2", 5000, "s" * 43)
    assert after_fetch(state, moved, 500)[1] == "moved"
    other = Location("b" * 43, loc.url, 5000, "t" * 43)
    assert after_fetch(state, other, 500)[1] == "replaced"


class Canned:
    """A Transport answering from a table (url -> JSON or an exception to raise)."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.calls: list[str] = []

    def get_json(self, url: str) -> Any:
        return self._answer(url)

    def post_json(self, url: str, body: Any) -> Any:
        return self._answer(url)

    def _answer(self, url: str) -> Any:
        self.calls.append(url)
        answer = self.answers.get(url, PeerUnreachable(f"{url}: connection refused"))
        if isinstance(answer, Exception):
            raise answer
        return answer


def _peer(canned: Canned, url: str, key: NodeIdentity) -> None:
    canned.answers[url + "/"] = {"address": key.address}
    canned.answers[url + "/graphql"] = _answer(_node(_record(key, url)))


def test_directory_learns_logs_once_and_skips_itself(
        keys: tuple[NodeIdentity, NodeIdentity], caplog: pytest.LogCaptureFixture) -> None:
    a, b = keys
    canned = Canned()
    directory = PeerDirectory(["http://b:1", "http://self:2"], a.address, transport=canned)
    _peer(canned, "http://self:2", a)
    caplog.set_level(logging.INFO, "appliance.peers")
    for _ in range(3):
        assert directory.refresh("http://b:1").reachable is False
        assert directory.refresh("http://self:2").error == \
            f"http://self:2 is this node itself ({a.address})"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].getMessage().startswith("peer unreachable peer=http://b:1 error=")
    _peer(canned, "http://b:1", b)
    state = directory.refresh("http://b:1")
    assert state.address == b.address and state.location is not None
    assert state.location.url == "http://b:1"
    learned = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert learned == [f"peer learned peer=http://b:1 address={b.address} "
                       f"location=http://b:1 ttl_ms={WEEK_MS}"]
    assert directory.by_address(b.address) == state
    assert directory.by_address(a.address) is None
    described = directory.describe()[0]
    assert described["address"] == b.address and described["reachable"] is True


def test_refusals_name_the_scheduling_node(keys: tuple[NodeIdentity, NodeIdentity],
                                           tmp_path: Path) -> None:
    a, b = keys
    client = NodeIdentity.load_or_create(tmp_path / "client")
    canned = Canned()
    _peer(canned, "http://b:1", b)
    directory = PeerDirectory(["http://b:1"], a.address, transport=canned)
    directory.refresh("http://b:1")
    process = items.sign(client, tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                       ("Module", "m" * 43), ("Scheduler", b.address)])
    refused = directory.explain(process.raw, NotHosted("process names scheduler ..."))
    assert isinstance(refused, NotHosted)
    assert str(refused) == (f"process {process.id} is scheduled by node {b.address} at "
                            "http://b:1; send it there")
    stranger = items.sign(client, tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                        ("Module", "m" * 43), ("Scheduler", "z" * 43)])
    text = str(directory.explain(stranger.raw, NotHosted("x")))
    assert f"scheduled by node {'z' * 43}, which is not a known peer" in text

    msg = items.sign(client, target=process.id, tags=[("Data-Protocol", "ao"),
                                                      ("Type", "Message")])
    original = NotFound(f"process {process.id} is not hosted on this node")
    assert directory.explain(msg.raw, original) is original  # b does not host it (yet)
    assert directory.explain(msg.raw, original) is original  # the miss is remembered:
    asked = [c for c in canned.calls if "/processes/" in c]
    assert len(asked) == 1  # not asked again
    for odd in ([], "x", {"process_id": process.id, "tags": "x"},
                {"process_id": process.id, "tags": [{"name": "Scheduler", "value": "z" * 43}]}):
        directory._misses.clear()
        canned.answers[f"http://b:1/processes/{process.id}"] = odd
        assert directory.explain(msg.raw, original) is original  # not b's: ignored
    directory._misses.clear()
    canned.answers[f"http://b:1/processes/{process.id}"] = {
        "process_id": process.id, "tags": [{"name": "Scheduler", "value": b.address}]}
    located = directory.explain(msg.raw, original)
    assert isinstance(located, NotHosted) and "at http://b:1; send it there" in str(located)
    assert isinstance(directory.explain(msg.raw, original), NotHosted)  # remembered
    assert len([c for c in canned.calls if "/processes/" in c]) == 6
    other = NotFound("module missing")
    assert directory.explain(process.raw, other) is other
    assert directory.explain(b"garbage", original) is original


def test_grpc_refusals_name_the_scheduling_node(keys: tuple[NodeIdentity, NodeIdentity],
                                                tmp_path: Path) -> None:
    a, b = keys
    canned = Canned()
    _peer(canned, "http://b:1", b)
    node = make_node(tmp_path)
    try:
        directory = PeerDirectory(["http://b:1"], node.identity.address, transport=canned)
        directory.refresh("http://b:1")
        process = items.sign(a, tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                      ("Module", "m" * 43), ("Scheduler", b.address)])
        with pytest.raises(NotHosted, match="at http://b:1; send it there"):
            OperatorService(node, peers=directory)._ingest(process.raw, "Process", "Spawn")
        with pytest.raises(NotHosted, match="process names scheduler"):
            OperatorService(node)._ingest(process.raw, "Process", "Spawn")
        [peer] = OperatorService(node, peers=directory)._status().peers
        assert (peer.url, peer.address, peer.location, peer.state, peer.error) == \
            ("http://b:1", b.address, "http://b:1", "reachable", "")
        assert peer.ttl_ms == int(WEEK_MS) and peer.last_seen_ms > 0
        assert list(OperatorService(node)._status().peers) == []
    finally:
        node.close()


def test_fetch_from_a_real_node(tmp_path: Path) -> None:
    provider = EmulatedProvider(tmp_path / "tee")
    with serve_in_thread(tmp_path / "node", provider) as (srv, node):
        location = fetch_location(HttpTransport(timeout=30), srv.url)
        assert location.address == node.identity.address and location.url == srv.url
        assert location.ttl_ms == int(WEEK_MS)
        node.publish_location("https://moved.example.org")  # the newest record wins
        assert fetch_location(HttpTransport(timeout=30), srv.url).url == \
            "https://moved.example.org"
        with pytest.raises(PeerUnreachable, match="HTTP 404"):
            HttpTransport(timeout=30).get_json(srv.url + "/processes/" + "x" * 43)
    with pytest.raises(PeerUnreachable):
        HttpTransport(timeout=30).get_json(srv.url + "/")  # stopped: refused
    with pytest.raises(PeerUnreachable, match="not an http"):
        HttpTransport().get_json("file:///etc/passwd")
