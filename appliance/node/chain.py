"""The hash chain and canonical encodings that make schedules and results verifiable (DESIGN §4)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from appliance.ao.encoding import b64url, b64url_decode

REPORT_DATA_PREFIX = b"ao-appliance/report-data/v1\0"


def first_hash_chain(process_id: str) -> str:
    """HC0 = b64url(SHA-256(process id bytes))."""
    return b64url(hashlib.sha256(b64url_decode(process_id)).digest())


def next_hash_chain(previous_assignment_id: str, previous_hash_chain: str) -> str:
    """HCn = b64url(SHA-256(previous assignment id bytes || HC(n-1) bytes)) (legacy SU rule)."""
    data = b64url_decode(previous_assignment_id) + b64url_decode(previous_hash_chain)
    return b64url(hashlib.sha256(data).digest())


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the byte form signed into Result items."""
    return _CANONICAL.encode(value).encode("utf-8")


def report_data(node_public_key: bytes, config_digest: bytes, nonce: bytes) -> bytes:
    """SHA-512(prefix || node key (32) || config digest (32) || nonce): the attestation binding."""
    if len(node_public_key) != 32 or len(config_digest) != 32:
        raise ValueError("node key and config digest must be 32 bytes each")
    return hashlib.sha512(REPORT_DATA_PREFIX + node_public_key + config_digest + nonce).digest()
