"""Property tests: no input makes the ANS-104 item or bundle parsers raise anything but the node's
typed refusals (BadRequest / TooLarge), and every valid item survives mutation checks."""

from __future__ import annotations

import contextlib

import nacl.signing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.ao import items
from appliance.errors import BadRequest, TooLarge
from appliance.node.bundles import encode_bundle, parse_bundle
from appliance.node.identity import NodeIdentity

LIMIT = 1 << 16


def _identity(seed: int) -> NodeIdentity:
    return NodeIdentity(nacl.signing.SigningKey(bytes([seed]) * 32))


def _signed() -> items.Item:
    identity = _identity(7)
    return items.sign(identity, tags=[("Data-Protocol", "ao"), ("Action", "Eval")],
                      data=b"return 1", anchor=b"a" * 32)


SIGNED = _signed()
tag_text = st.text(max_size=40)


def _refused_cleanly(fn: object, data: bytes) -> None:
    with contextlib.suppress(BadRequest, TooLarge):
        fn(data, LIMIT)  # type: ignore[operator]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_are_refused_cleanly(data: bytes) -> None:
    _refused_cleanly(items.parse_verified, data)
    _refused_cleanly(parse_bundle, data)


@settings(max_examples=400)
@given(st.integers(min_value=0, max_value=len(SIGNED.raw) - 1), st.integers(1, 255))
def test_any_single_byte_change_of_a_signed_item_is_refused(offset: int, flip: int) -> None:
    raw = bytearray(SIGNED.raw)
    raw[offset] ^= flip
    try:
        item = items.parse_verified(bytes(raw), LIMIT)
    except (BadRequest, TooLarge):
        return
    raise AssertionError(f"accepted a modified item (byte {offset}): {item.id}")


@settings(max_examples=200)
@given(st.lists(st.tuples(tag_text, tag_text), max_size=8), st.binary(max_size=256))
def test_tags_and_data_round_trip(tags: list[tuple[str, str]], data: bytes) -> None:
    identity = _identity(9)
    item = items.sign(identity, tags=tags, data=data)
    parsed = items.parse_verified(item.raw, LIMIT)
    assert parsed.tags == tags and parsed.data == data and parsed.id == item.id
    assert [i.id for i in parse_bundle(encode_bundle([item, SIGNED]), LIMIT)] == [
        item.id, SIGNED.id]


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=len(SIGNED.raw) + 200))
def test_truncated_or_extended_bundles_are_refused(cut: int) -> None:
    bundle = encode_bundle([SIGNED])
    mutated = bundle[:cut] if cut < len(bundle) else bundle + b"\0" * (cut - len(bundle) + 1)
    _refused_cleanly(parse_bundle, mutated)
