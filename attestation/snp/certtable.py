"""The SEV-SNP certificate table (GHCB spec §4.1.8.1, extended guest request): GUID-keyed blobs."""

from __future__ import annotations

import struct
import uuid

from attestation.errors import MalformedEvidence

MAX_TABLE_BYTES = 1 << 20
MAX_ENTRIES = 64
"""Real tables hold 3-5 entries (VCEK or VLEK, ASK, ARK, maybe more keys)."""
_ENTRY = struct.Struct("<16sII")
KNOWN_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
}


def _guid(raw: bytes) -> uuid.UUID:
    """GUIDs appear in RFC 4122 byte order; accept the mixed-endian form some hosts write."""
    plain = uuid.UUID(bytes=raw)
    return plain if plain in KNOWN_GUIDS else uuid.UUID(bytes_le=raw)


def parse_cert_table(table: bytes) -> dict[str, bytes]:
    """Map VCEK/VLEK/ASK/ARK (and unknown GUID strings) to their DER blobs.

    The table is a list of (GUID, offset, length) entries ended by an all-zero entry; offsets are
    relative to the table start. Blobs are returned as stored (DER); trailing padding is ignored.
    """
    if len(table) > MAX_TABLE_BYTES:
        raise MalformedEvidence(f"certificate table: {len(table)} bytes exceeds {MAX_TABLE_BYTES}")
    found: dict[str, bytes] = {}
    pos = claimed = 0
    while True:
        if pos + _ENTRY.size > len(table):
            raise MalformedEvidence("certificate table: missing terminating zero entry")
        raw_guid, offset, length = _ENTRY.unpack_from(table, pos)
        pos += _ENTRY.size
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            return found
        if offset < pos or offset + length > len(table):
            raise MalformedEvidence(
                f"certificate table: entry {len(found)} points outside the table "
                f"(offset {offset}, length {length}, table {len(table)} bytes)")
        claimed += length
        if len(found) >= MAX_ENTRIES or claimed > len(table):
            raise MalformedEvidence(
                f"certificate table: more than {MAX_ENTRIES} entries, or entries claiming more "
                f"bytes than the table's {len(table)} (blobs may not overlap)")
        guid = _guid(raw_guid)
        name = KNOWN_GUIDS.get(guid, str(guid))
        if name in found:
            raise MalformedEvidence(f"certificate table: {name} appears twice")
        found[name] = table[offset:offset + length]


def build_cert_table(blobs: dict[str, bytes]) -> bytes:
    """Inverse of :func:`parse_cert_table` for the known names (used by tests and tools)."""
    by_name = {name: guid for guid, name in KNOWN_GUIDS.items()}
    header = bytearray()
    body = bytearray()
    base = _ENTRY.size * (len(blobs) + 1)
    for name, blob in blobs.items():
        header += _ENTRY.pack(by_name[name].bytes, base + len(body), len(blob))
        body += blob
    return bytes(header + bytes(_ENTRY.size) + body)
