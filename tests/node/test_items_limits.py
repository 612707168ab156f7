"""Untrusted counts and lengths in ANS-104 items are checked before the work they imply: parsing
costs memory proportional to the input (tracemalloc), never to what the bytes claim."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.ao import items
from appliance.errors import BadRequest, TooLarge
from appliance.node.bundles import parse_bundle

HEAD = struct.pack("<H", 2) + b"\1" * 64 + b"\2" * 32 + b"\0\0"


def _zigzag(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _item(count: int, tag_bytes: bytes, data: bytes = b"") -> bytes:
    return HEAD + struct.pack("<QQ", count, len(tag_bytes)) + tag_bytes + data


def _peak(fn: object, *args: object) -> tuple[int, BaseException | None]:
    """Peak bytes allocated while ``fn(*args)`` runs, and what it raised."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    error: BaseException | None = None
    try:
        fn(*args)  # type: ignore[operator]
    except (BadRequest, TooLarge) as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


def tag_bomb(size: int = 16 * 1024 * 1024, claimed: int = 8_000_000) -> bytes:
    """The item of issue 12: it declares 1 tag, its Avro block claims ``claimed`` empty tags,
    and it is padded with data to ``size`` bytes (unsigned: the parser refuses it first)."""
    tags = _zigzag(claimed) + b"\0\0" * claimed + b"\0"
    raw = _item(1, tags)
    return raw + b"x" * (size - len(raw))


def test_the_tag_bomb_is_refused_before_any_tag_is_decoded() -> None:
    raw = tag_bomb(4 * 1024 * 1024, 2_000_000)
    peak, error = _peak(items.parse_unverified, raw, len(raw))
    assert isinstance(error, BadRequest) and "declares 1" in str(error)
    assert peak <= len(raw) + 256 * 1024  # one copy of the tag bytes, no tag objects


@pytest.mark.parametrize(("count", "tags", "reason"), [
    (2, _zigzag(3) + b"\0\0" * 3 + b"\0", "declares 2"),
    (128, _zigzag(100) + b"\0\0" * 10 + b"\0", "claims 100 tags in 21 bytes"),
    (1, _zigzag(-1) + _zigzag(1 << 40) + b"\0\0\0", "block size"),
    (1, _zigzag(-1) + _zigzag(-3) + b"\0\0\0", "block size"),
    (1, _zigzag(-(1 << 40)) + _zigzag(2) + b"\0\0\0", "declares 1"),
    (2, _zigzag(1) + b"\0\0" + _zigzag(2) + b"\0\0\0\0\0", "declares 2"),
])
def test_block_counts_and_sizes_are_checked_first(count: int, tags: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        items.parse_unverified(_item(count, tags))


def test_negative_block_counts_with_their_byte_size_decode() -> None:
    """Avro lets a writer give a block as -count followed by its size in bytes."""
    body = b"\2a\2b" + b"\2c\2d"
    tags = _zigzag(-2) + _zigzag(len(body)) + body + b"\0"
    assert items.parse_unverified(_item(2, tags)).tags == [("a", "b"), ("c", "d")]


blocks = st.lists(st.tuples(st.one_of(st.integers(1, 200_000), st.integers(-(1 << 62), 1 << 62)),
                            st.integers(0, 1 << 40), st.booleans()), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(0, 200), shape=blocks,
       filler=st.one_of(st.sampled_from([20_000, 200_000]), st.integers(0, 200_000)),
       tail=st.binary(max_size=64))
def test_memory_stays_proportional_to_the_input(count: int, shape: list[tuple[int, int, bool]],
                                               filler: int, tail: bytes) -> None:
    tags = b"".join(_zigzag(n) + (_zigzag(size) if negative else b"")
                    for n, size, negative in shape) + b"\0" * filler + tail
    raw = _item(count, tags)
    peak, error = _peak(items.parse_unverified, raw, len(raw))
    assert peak <= 2 * len(raw) + 128 * 1024, (peak, len(raw), error)


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 1 << 200), sizes=st.lists(st.integers(0, 1 << 200), max_size=3))
def test_bundle_counts_and_sizes_are_checked_against_the_bytes(count: int,
                                                              sizes: list[int]) -> None:
    raw = count.to_bytes(32, "little") + b"".join(
        s.to_bytes(32, "little") + b"\0" * 32 for s in sizes)
    peak, error = _peak(parse_bundle, raw, 1 << 20)
    assert peak <= 64 * 1024, (peak, error)


@pytest.mark.parametrize("modulus", [0, 3])
def test_an_rsa_owner_that_is_no_key_is_a_bad_request(modulus: int) -> None:
    raw = (struct.pack("<H", 1) + b"\1" * 512 + modulus.to_bytes(512, "big") + b"\0\0"
           + struct.pack("<QQ", 0, 0))
    with pytest.raises(BadRequest, match="not an RSA public key"):
        items.parse_verified(raw, len(raw))


@pytest.mark.parametrize("body", [b"hello, node", b'{"Tags": []}', b"<html></html>"])
def test_text_is_not_an_ans104_item(body: bytes) -> None:
    with pytest.raises(BadRequest, match=r"not an ANS-104 data item.*application/octet-stream"):
        items.parse_unverified(body)
