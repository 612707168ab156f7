"""JSON renderings of stored items in the legacy scheduler unit's shapes (what aoconnect reads)."""

from __future__ import annotations

from typing import Any

from appliance.ao import items
from appliance.ao.encoding import b64url
from appliance.node.guest import anchor_text, data_text, tag_list


def owner(item: items.Item) -> dict[str, str]:
    """``{address, key}`` of an item's owner."""
    return {"address": item.owner_address, "key": b64url(item.owner)}


def message_json(item: items.Item) -> dict[str, Any]:
    """A scheduled message (``MessageInner``)."""
    return {"id": item.id, "owner": owner(item), "data": data_text(item.data),
            "tags": tag_list(item.tags), "signature": b64url(item.signature),
            "anchor": anchor_text(item.anchor), "target": item.target or None}


def assignment_json(item: items.Item) -> dict[str, Any]:
    """An Assignment item (``AssignmentInner``)."""
    return {"id": item.id, "owner": owner(item), "tags": tag_list(item.tags),
            "signature": b64url(item.signature), "anchor": None, "target": None}


def process_json(item: items.Item, assignment: items.Item | None,
                 timestamp_ms: int, block_height: int) -> dict[str, Any]:
    """A process (``Process``: its item fields plus its slot-0 assignment)."""
    return {"process_id": item.id, "block": str(block_height), "owner": owner(item),
            "tags": tag_list(item.tags), "timestamp": timestamp_ms,
            "data": data_text(item.data), "anchor": anchor_text(item.anchor),
            "signature": b64url(item.signature), "target": item.target or None,
            "assignment": assignment_json(assignment) if assignment else None}
