"""AO-Core (mainnet) request paths as aoconnect and aos send them, parsed without I/O.

``parse(raw_path)`` names the operation, the process and the slot or message of a path such as
``/{p}~process@1.0/compute/results=3`` (docs/mainnet.md, sections 1 and 3); a path that names
a served operation badly raises BadRequest, one outside the served subset is ``payments`` or
``other``.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from appliance.errors import BadRequest

Operation = Literal["push", "compute", "slot", "dry-run", "payments", "other"]
MAX_PAIRS = 128
MAX_NAME_BYTES = 1024
MAX_VALUE_BYTES = 3072
MAX_SLOT = 2**63 - 1
PROCESS_DEVICE = "process@1.0"
PAYMENT_DEVICES = ("p4@1.0", "simple-pay@1.0", "faff@1.0", "node-process@1.0")
_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_SLOT = re.compile(r"[0-9]{1,19}")
_COMPUTE = re.compile(r"compute(?:/results)?=(?P<ref>[^/&]*)")


@dataclass(frozen=True)
class Route:
    """One parsed AO-Core path: what to do, on which process, for which slot or message.

    ``ref`` is a slot (int) or a message id (str) for ``compute``, None for the latest slot;
    ``tags`` are the dry-run message's tags in path order.
    """

    operation: Operation
    process: str | None = None
    ref: int | str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def _process(text: str) -> str:
    if not _ID.fullmatch(text):
        raise BadRequest("the process in an AO-Core path must be a 43-character id")
    return text


def _ref(text: str) -> int | str:
    if _SLOT.fullmatch(text) and int(text) <= MAX_SLOT:
        return int(text)
    if _ID.fullmatch(text):
        return text
    raise BadRequest("compute/results= takes a slot (0 to 2^63 - 1) or a 43-character "
                     "message id")


def _decoded(text: str, what: str, limit: int) -> str:
    try:
        value = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"dry-run tag {what} is not UTF-8 once percent-decoded") from None
    if len(value.encode()) > limit:
        raise BadRequest(f"dry-run tag {what} exceeds {limit} bytes")
    return value


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    parts = [part for part in text.split("&") if part]
    if len(parts) > MAX_PAIRS:
        raise BadRequest(f"a dry-run path takes at most {MAX_PAIRS} tags")
    tags = []
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise BadRequest("dry-run tags in the path must be name=value pairs")
        tags.append((_decoded(name, "name", MAX_NAME_BYTES),
                     _decoded(value, "value", MAX_VALUE_BYTES)))
    return tuple(tags)


def _on_process(process: str, rest: str) -> Route:
    if rest == "push":
        return Route("push", process)
    if rest == "slot/current":
        return Route("slot", process)
    if rest in ("compute", "now"):
        return Route("compute", process)
    if match := _COMPUTE.fullmatch(rest):
        return Route("compute", process, _ref(match["ref"]))
    head, sep, pairs = rest.partition("&")
    if head == "as=execution/compute" and sep:
        return Route("dry-run", process, tags=_pairs(pairs))
    return Route("other", process)


def parse(raw_path: str) -> Route:
    """The route of ``raw_path`` (still percent-encoded, without the query string)."""
    if raw_path == "/push":
        return Route("push")
    first, _, rest = raw_path.removeprefix("/").partition("/")
    base, tilde, device = first.partition("~")
    if device in PAYMENT_DEVICES or any(f"~{d}" in rest for d in PAYMENT_DEVICES):
        return Route("payments")
    if not base or (tilde and device != PROCESS_DEVICE):
        return Route("other")
    route = _on_process(_process(base), rest)
    if not tilde and route.operation in ("push", "dry-run"):  # the clients name the device
        return Route("other", route.process)
    return route
