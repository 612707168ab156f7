"""The proof bundle: every item needed to check one Result offline (``ao-appliance-proof/v1``).

It holds the process's Assignment and Result items from slot 0 up to the message's slot, every
Attestation item those results name, the cron Results evaluated between those slots and, for
``--replay``, the process, module and message items.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from appliance.errors import UsageError

PROOF_FORMAT = "ao-appliance-proof/v1"
MAX_PROOF_BYTES = 512 << 20


@dataclass(frozen=True)
class Proof:
    """Raw ANS-104 items proving ``message_id``'s result on ``process_id``."""

    process_id: str
    message_id: str
    assignments: tuple[bytes, ...]
    results: tuple[bytes, ...]
    attestations: tuple[bytes, ...]
    messages: tuple[bytes, ...] = ()
    module: bytes | None = None
    crons: tuple[bytes, ...] = ()
    """Cron Result items between slot 0 and the message's slot, in chain order."""

    def encode(self) -> bytes:
        """JSON with base64 items."""
        def b64(blobs: tuple[bytes, ...]) -> list[str]:
            return [base64.b64encode(b).decode("ascii") for b in blobs]

        body: dict[str, Any] = {
            "format": PROOF_FORMAT, "process": self.process_id, "message": self.message_id,
            "assignments": b64(self.assignments), "results": b64(self.results),
            "attestations": b64(self.attestations), "messages": b64(self.messages),
            "module": None if self.module is None else b64((self.module,))[0],
            "crons": b64(self.crons),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """Parse a bundle; anything malformed is a :class:`UsageError` naming the field."""
        if len(data) > MAX_PROOF_BYTES:
            raise UsageError(f"proof bundle larger than {MAX_PROOF_BYTES} bytes")
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"proof bundle is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != PROOF_FORMAT:
            raise UsageError(f"not a {PROOF_FORMAT} bundle")

        def text(key: str) -> str:
            value = body.get(key)
            if not isinstance(value, str) or not value:
                raise UsageError(f"proof bundle: {key} must be a non-empty string")
            return value

        def blobs(key: str) -> tuple[bytes, ...]:
            value = body.get(key, [])
            if not isinstance(value, list):
                raise UsageError(f"proof bundle: {key} must be a list")
            return tuple(_b64(v, key) for v in value)

        module = body.get("module")
        return cls(
            process_id=text("process"), message_id=text("message"),
            assignments=blobs("assignments"), results=blobs("results"),
            attestations=blobs("attestations"), messages=blobs("messages"),
            module=None if module is None else _b64(module, "module"),
            crons=blobs("crons"),
        )


def _b64(value: Any, key: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise UsageError(f"proof bundle: {key} holds invalid base64") from None
