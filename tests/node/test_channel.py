"""The front-shard channel: calls, notes, the order between them, and frames of any size."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.errors import ShardUnavailable
from appliance.node.channel import NOTE_SOON_SECONDS, READ_BYTES, Channel


class _Side:
    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.channel: Channel | None = None
        self.release = threading.Event()

    def told(self, value: Any) -> None:
        self.seen.append(value)

    def count(self) -> int:
        return len(self.seen)

    def echo(self, value: Any) -> Any:
        return value

    def work(self, value: int) -> int:
        assert self.channel is not None
        self.channel.note_soon("told", value)  # must reach the caller before this reply
        return value

    def hang(self) -> None:
        self.release.wait(10)


CALLS = ("count", "echo", "work", "hang")


@pytest.fixture
def pair() -> Iterator[tuple[_Side, _Side]]:
    ours, theirs = socket.socketpair()
    a, b = _Side(), _Side()
    a.channel = Channel(ours, a, calls=CALLS, notes=("told",), name="a")
    b.channel = Channel(theirs, b, calls=CALLS, notes=("told",), name="b")
    yield a, b
    b.release.set()
    a.channel.close()
    b.channel.close()


def test_soon_notes_arrive_before_anything_sent_after_them(pair: tuple[_Side, _Side]) -> None:
    a, b = pair
    assert a.channel is not None and b.channel is not None
    for k in range(50):
        a.channel.note_soon("told", k)
        assert a.channel.call("count") == k + 1  # the note went out with the call, ahead of it
    assert [a.channel.call("work", k) for k in range(50)] == list(range(50))
    assert a.seen == list(range(50))  # each reply came after the note sent while answering it


def test_a_soon_note_with_nothing_after_it_is_sent_within_its_delay(
        pair: tuple[_Side, _Side]) -> None:
    a, b = pair
    assert a.channel is not None
    started = time.monotonic()
    a.channel.note_soon("told", "alone")
    while b.seen != ["alone"]:
        assert time.monotonic() - started < 5
        time.sleep(0.005)
    assert time.monotonic() - started >= NOTE_SOON_SECONDS * 0.5


def test_many_threads_and_large_frames_get_their_own_replies(pair: tuple[_Side, _Side]) -> None:
    a, _b = pair
    assert a.channel is not None
    channel = a.channel
    big = bytes(range(256)) * (3 * READ_BYTES // 256 + 7)
    failures: list[BaseException] = []

    def run(k: int) -> None:
        try:
            for n in range(40):
                value = big + bytes([k, n]) if n % 10 == 0 else (k, n)
                assert channel.call("echo", value) == value
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_calls_waiting_when_the_other_end_goes_fail(pair: tuple[_Side, _Side]) -> None:
    a, b = pair
    assert a.channel is not None and b.channel is not None
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            a.channel.call("hang")  # type: ignore[union-attr]
        except ShardUnavailable as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    b.channel.close()
    waiter.join(5)
    assert len(outcome) == 1
    with pytest.raises(ShardUnavailable):
        a.channel.call("echo", 1)
