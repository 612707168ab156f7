"""The fast paths of item building give the bytes the plain definitions give."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from appliance.ao import items
from appliance.ao.encoding import b64url, b64url_decode
from appliance.node.identity import NodeIdentity


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _plain_tags(tags: list[tuple[str, str]]) -> bytes:
    if not tags:
        return b""
    body = b"".join(_zigzag(len(t.encode())) + t.encode() for pair in tags for t in pair)
    return _zigzag(len(tags)) + body + b"\0"


def test_encode_tags_matches_the_avro_definition() -> None:
    long_value = "v" * 5000  # beyond the zigzag table
    for tags in ([], [("Type", "Assignment")], [("é", "ü" * 70), ("Big", long_value)],
                 [("n", str(k)) for k in range(70)]):
        assert items.encode_tags(tags) == _plain_tags(tags)
        if tags and len(tags[-1][1]) <= items.MAX_TAG_VALUE:
            assert items.decode_tags(_plain_tags(tags), len(tags)) == tags


def test_b64url_matches_the_base64_module() -> None:
    for n in range(70):
        data = os.urandom(n)
        text = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        assert b64url(data) == text
        assert b64url_decode(text) == data


def test_signed_raw_is_sign_without_the_item(tmp_path: Path) -> None:
    node = NodeIdentity.load_or_create(tmp_path)
    tags = [("Process", "P" * 43), ("Nonce", "7"), ("Type", "Assignment")]
    item = items.sign(node, tags=tags)
    assert items.signed_raw(node, tags=tags) == (item.raw, item.id)
    parsed = items.parse_verified(item.raw, 1 << 20)
    assert parsed == item
    assert parsed.id == base64.urlsafe_b64encode(
        hashlib.sha256(item.signature).digest()).rstrip(b"=").decode()
    assert parsed.owner_address == node.address
