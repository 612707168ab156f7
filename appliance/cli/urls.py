"""Node URLs as the commands take them: ``HOST:PORT`` alone means ``http://HOST:PORT``."""

from __future__ import annotations

import urllib.parse

from appliance.errors import UsageError

DEFAULT_NODE = "http://127.0.0.1:8734"


def node_url(text: str) -> str:
    """``text`` as a base URL without a trailing slash (``http://`` added when no scheme)."""
    value = text.strip().rstrip("/")
    if "://" not in value:
        value = f"http://{value}"
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--node expects http(s)://HOST:PORT or HOST:PORT, got {text!r}")
    return value
