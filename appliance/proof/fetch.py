"""Fetch a proof bundle from a node's HTTP API (``GET /proof/{message}?process-id=``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from appliance.errors import UsageError
from appliance.proof.bundle import MAX_PROOF_BYTES, Proof


def fetch_proof(node_url: str, process_id: str, message_id: str, *, replay: bool,
                timeout: float = 120.0) -> Proof:
    """Download and decode the bundle; an unreachable node or an error reply is a UsageError."""
    params = {"process-id": process_id} | ({"replay": "1"} if replay else {})
    query = urllib.parse.urlencode(params)
    url = f"{node_url.rstrip('/')}/proof/{urllib.parse.quote(message_id, safe='')}?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user's URL
            data = response.read(MAX_PROOF_BYTES + 1)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read(65536)).get("error", "")
        except (ValueError, AttributeError):
            detail = ""
        raise UsageError(f"{url}: HTTP {exc.code} {detail}".rstrip()) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UsageError(f"cannot reach {node_url}: {exc}") from None
    return Proof.decode(data)
