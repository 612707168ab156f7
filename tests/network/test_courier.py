"""The courier's decisions (what an answer means, back-off, order per sending process), its
loop over a store-like outbox, the peer directory's routes, and the receiver's de-duplication of
a pushed message by ``Pushed-For`` + ``Reference`` from the same ``From-Process``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from appliance.ao import items
from appliance.network.courier import (
    BACKOFF_MAX_SECONDS,
    Courier,
    PushRefused,
    Route,
    assign_query,
    heads,
    next_delay,
    verdict,
)
from appliance.network.peers import PeerDirectory
from appliance.node.db.kinds import OutboxStatus
from appliance.node.db.queries import PendingPush
from appliance.node.identity import NodeIdentity
from tests.rpc.support import make_node
from tests.support.echo import echo_module


def _row(process: str, slot: int, key: str) -> PendingPush:
    return PendingPush(key, process, slot, "t" * 43, "message", b"raw-" + key.encode(), 1)


def test_what_an_answer_means() -> None:
    delivered = verdict({"id": "x", "slot": 3, "timestamp": 5, "message": "Processing"})
    assert delivered.status is OutboxStatus.DELIVERED
    assert json.loads(delivered.detail) == {"id": "x", "slot": 3, "timestamp": 5}
    for code in (400, 403, 404, 413, 422):
        failed = verdict(PushRefused("peer says no", code))
        assert failed.status is OutboxStatus.FAILED
        assert failed.detail == f"HTTP {code}: peer says no"
    for code in (408, 421, 429, 500, 503, None):
        retried = verdict(PushRefused("later", code))
        assert retried.status is None and retried.detail == "later"


def test_backoff_doubles_and_is_capped() -> None:
    delays = [next_delay(n) for n in range(1, 12)]
    assert delays[0] == pytest.approx(0.2) and delays[1] == pytest.approx(0.4)
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[-1] == BACKOFF_MAX_SECONDS


def test_a_held_process_waits_others_go() -> None:
    rows = [_row("p", 1, "p1"), _row("p", 2, "p2"), _row("q", 1, "q1")]
    assert heads(rows, {"p": 10.0}, 5.0) == [rows[2]]
    assert heads(rows, {"p": 10.0}, 11.0) == rows


class _Outbox:
    """A list standing in for a shard's outbox table (the loop's contract, not its SQL)."""

    def __init__(self, rows: list[PendingPush]) -> None:
        self.rows = rows
        self.settled: list[tuple[str, OutboxStatus, str]] = []

    def pending_pushes(self, limit: int) -> list[PendingPush]:
        return self.rows[:limit]

    def settle_pushes(self, settled: list[tuple[PendingPush, OutboxStatus, str]]) -> None:
        for row, status, detail in settled:
            self.rows.remove(row)
            self.settled.append((row.key, status, detail))


def test_a_retried_item_holds_back_its_process_only_and_keeps_order() -> None:
    outbox = _Outbox([_row("p", 1, "p1"), _row("p", 2, "p2"), _row("q", 1, "q1"),
                      _row("w", 1, "w1")])
    sent: list[str] = []
    answers: dict[str, list[Any]] = {"p1": [PushRefused("down", 503), {"id": "p1"}]}

    def post(url: str, raw: bytes) -> dict[str, Any]:
        key = raw.decode().removeprefix("raw-")
        sent.append(key)
        answer = answers.get(key, [{"id": key}]).pop(0)
        if isinstance(answer, PushRefused):
            raise answer
        return dict(answer)

    def route(kind: str, target: str, scheduler: str | None) -> Route:
        return Route(url="http://peer")

    courier = Courier(outbox, route, post=post)
    wait = courier.round()
    assert sent == ["p1", "q1", "w1"]  # p2 waits behind p1
    assert 0 < wait <= next_delay(1)
    courier._held["p"] = 0.0  # the back-off has passed
    courier.round()
    assert sent == ["p1", "q1", "w1", "p1", "p2"]
    assert [key for key, _, _ in outbox.settled] == ["q1", "w1", "p1", "p2"]
    assert {status for _, status, _ in outbox.settled} == {OutboxStatus.DELIVERED}


def test_unroutable_targets_end_pending_remote_without_a_post() -> None:
    outbox = _Outbox([_row("p", 1, "p1"), _row("q", 1, "q1")])

    def post(url: str, raw: bytes) -> dict[str, Any]:
        raise AssertionError("nothing to post to")

    def route(kind: str, target: str, scheduler: str | None) -> Route:
        return Route(nowhere=f"no node hosts {target}")

    Courier(outbox, route, post=post).round()
    assert [(k, s) for k, s, _ in outbox.settled] == [("p1", OutboxStatus.PENDING_REMOTE),
                                                       ("q1", OutboxStatus.PENDING_REMOTE)]
    assert outbox.rows == []


def test_routes_without_peers_are_final() -> None:
    directory = PeerDirectory([], "a" * 43)
    assert directory.route("message", "w" * 43, None).nowhere is not None
    assert directory.route("spawn", "c" * 43, "s" * 43).nowhere is not None
    down = PeerDirectory(["http://127.0.0.1:9"], "a" * 43)  # never learned: maybe it hosts it
    assert down.route("message", "w" * 43, None) == Route()
    assert down.route("spawn", "c" * 43, "s" * 43) == Route()


def test_a_second_push_for_the_same_reference_gets_the_first_receipt(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    try:
        client = NodeIdentity.load_or_create(tmp_path / "client")
        peer = NodeIdentity.load_or_create(tmp_path / "peer")
        module = echo_module(client)
        node.ingest(module.raw)
        process = items.sign(client, anchor=b"p" * 32, tags=[
            ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
            ("Module", module.id), ("Scheduler", node.identity.address)])
        node.ingest(process.raw)

        def pushed(anchor: bytes, reference: str) -> items.Item:
            return items.sign(peer, target=process.id, anchor=anchor, tags=[
                ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"),
                ("From-Process", "f" * 43), ("Pushed-For", "m" * 43),
                ("Reference", reference)])

        first = node.ingest(pushed(b"1" * 32, "7").raw)
        again = node.ingest(pushed(b"2" * 32, "7").raw)  # another id, same Reference
        same = node.ingest(pushed(b"1" * 32, "7").raw)  # the same item again
        other = node.ingest(pushed(b"3" * 32, "8").raw)
        assert first.slot is not None and (again.id, again.slot) == (first.id, first.slot)
        assert (same.id, same.slot) == (first.id, first.slot)
        assert other.slot is not None and other.slot == first.slot + 1
        page, _ = node.schedule_page(process.id)
        assert len(page) == 3  # the process, and two messages
    finally:
        node.close()


def test_an_assignment_row_becomes_the_su_assign_query() -> None:
    message, target = "m" * 43, "t" * 43
    assert assign_query(f"{message}>{target}") == f"?process-id={target}&assign={message}"
