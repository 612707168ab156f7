"""Base64url as Arweave and AO write ids, owners and signatures."""

from __future__ import annotations

import binascii

_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> str:
    """Base64url without padding (Arweave's encoding)."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE).decode()


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url`; raises ``ValueError`` on malformed input."""
    if not isinstance(text, str) or "+" in text or "/" in text or "=" in text:
        raise ValueError("not base64url")
    # What base64.urlsafe_b64decode does, without its two wrapper calls (half the time).
    raw = text.encode("ascii").translate(_FROM_URLSAFE)
    return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
