"""ANS-104 bundles: a count, a header of (size, id) pairs, then the items back to back.

Layout: item count (32 bytes, little-endian) | count x (size: 32 bytes LE, id: 32 raw bytes) |
items. Every item is verified and its id must equal its header entry.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.ao.encoding import b64url, b64url_decode
from appliance.ao.items import Item, parse_verified
from appliance.errors import BadRequest, TooLarge

MAX_BUNDLE_ITEMS = 10_000


def _u256(raw: bytes, pos: int) -> int:
    return int.from_bytes(raw[pos:pos + 32], "little")


def parse_bundle(raw: bytes, max_bytes: int, max_items: int = MAX_BUNDLE_ITEMS) -> list[Item]:
    """Parse and verify every item of a bundle; any problem is a BadRequest (or TooLarge)."""
    if len(raw) > max_bytes:
        raise TooLarge(f"bundle of {len(raw)} bytes exceeds the limit of {max_bytes}")
    if len(raw) < 32:
        raise BadRequest("bundle is truncated")
    count = _u256(raw, 0)
    if count > max_items:
        raise BadRequest(f"bundle holds {count} items, more than {max_items}")
    pos = 32 + 64 * count
    if pos > len(raw):
        raise BadRequest("bundle header is truncated")
    items = []
    for index in range(count):
        size = _u256(raw, 32 + 64 * index)
        expected_id = b64url(raw[64 + 64 * index:96 + 64 * index])
        if size > len(raw) - pos:
            raise BadRequest(f"bundle item {index} is truncated")
        item = parse_verified(raw[pos:pos + size], size)
        if item.id != expected_id:
            raise BadRequest(f"bundle item {index} has id {item.id}, header says {expected_id}")
        items.append(item)
        pos += size
    if pos != len(raw):
        raise BadRequest(f"{len(raw) - pos} bytes after the last bundle item")
    return items


def encode_bundle(items: Sequence[Item]) -> bytes:
    """Serialise signed items as a bundle."""
    header = b"".join(len(i.raw).to_bytes(32, "little") + b64url_decode(i.id) for i in items)
    return len(items).to_bytes(32, "little") + header + b"".join(i.raw for i in items)
