"""The message and env objects a process's module receives, shaped as the legacy CU builds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.ao.encoding import b64url
from appliance.compute import jsjson


@dataclass(frozen=True)
class ScheduledSlot:
    """One row of a process's schedule."""

    process_id: str
    slot: int
    message_id: str
    assignment_id: str
    hash_chain: str
    timestamp_ms: int
    block_height: int
    attestation_id: str
    push_depth: int


def data_text(data: bytes) -> str | None:
    """Item data as the SU hands it on: the UTF-8 text, or nothing when it is not text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def anchor_text(anchor: bytes) -> str | None:
    """An anchor as text (aoconnect anchors are ASCII), else base64url; ``None`` when absent."""
    if not anchor:
        return None
    return data_text(anchor) or b64url(anchor)


def tag_list(tags: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Tags as ``[{name, value}]``."""
    return [{"name": name, "value": value} for name, value in tags]


def first_tag(tags: list[tuple[str, str]], name: str) -> str | None:
    """The value of the first tag called ``name``."""
    return next((value for tag, value in tags if tag == name), None)


def guest_message(item: Any, slot: ScheduledSlot) -> dict[str, Any]:
    """The ``msg`` object for ``handle`` (CU ``mapNode``: message fields, then assignment's)."""
    owner = item.owner_address
    from_process = first_tag(item.tags, "From-Process")
    msg: dict[str, Any] = {
        "Id": item.id,
        "Signature": b64url(item.signature),
        "Data": data_text(item.data),
        "Owner": owner,
        "Anchor": anchor_text(item.anchor),
        "From": from_process or owner,
        "Forwarded-By": owner if from_process else None,
        "Tags": tag_list(item.tags),
        "Message": item.id,
        "Target": slot.process_id,
        "Epoch": 0,
        "Nonce": slot.slot,
        "Timestamp": slot.timestamp_ms,
        "Block-Height": slot.block_height,
        "Hash-Chain": slot.hash_chain,
        "Cron": False,
    }
    return {k: v for k, v in msg.items() if v is not None}


def guest_message_json(item: Any, slot: ScheduledSlot) -> bytes:
    """``jsjson.stringify(guest_message(item, slot))``; the message holds no floats."""
    return jsjson.stringify_floatless(guest_message(item, slot))


def guest_env(process: Any, module: Any) -> dict[str, Any]:
    """The ``env`` object: the process and module items' ids, owners and tags."""
    return {
        "Process": {"Id": process.id, "Owner": process.owner_address,
                    "Tags": tag_list(process.tags)},
        "Module": {"Id": module.id, "Owner": module.owner_address,
                   "Tags": tag_list(module.tags)},
    }
