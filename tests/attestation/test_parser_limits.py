"""Counts and lengths in SEV-SNP certificate tables and certificate chains are checked before
the work they imply: memory stays proportional to the input (tracemalloc)."""

from __future__ import annotations

import struct
import tracemalloc
import uuid

import pytest

from attestation.errors import MalformedEvidence
from attestation.snp.certtable import MAX_ENTRIES, parse_cert_table


def test_a_table_whose_entries_all_point_at_its_tail_is_refused_in_linear_memory() -> None:
    """Every entry (distinct unknown GUID) claims the whole rest of a 64 KiB table: 10f4232
    copied the tail once per entry (~2,700 x 64 KiB)."""
    size, entries = 64 * 1024, 2700
    base = 24 * (entries + 1)
    table = b"".join(struct.pack("<16sII", uuid.UUID(int=i + 1).bytes, base, size - base)
                     for i in range(entries)) + bytes(24)
    table += b"\xaa" * (size - len(table))
    tracemalloc.start()
    try:
        with pytest.raises(MalformedEvidence, match="claiming more bytes"):
            parse_cert_table(table)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 2 * size + 64 * 1024, peak


def test_more_entries_than_any_host_writes_are_refused() -> None:
    count = MAX_ENTRIES + 1
    base = 24 * (count + 1)
    table = b"".join(struct.pack("<16sII", uuid.UUID(int=i + 1).bytes, base + i, 1)
                     for i in range(count)) + bytes(24) + b"\x01" * count
    with pytest.raises(MalformedEvidence, match=f"more than {MAX_ENTRIES} entries"):
        parse_cert_table(table)
