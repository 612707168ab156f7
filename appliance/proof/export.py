"""Build a :class:`Proof` from a running node (served as ``GET /proof/{message}?process-id=``)."""

from __future__ import annotations

from appliance.errors import NotFound
from appliance.node import items
from appliance.node.node import Node
from appliance.proof.bundle import Proof

PAGE = 1000


def build_proof(node: Node, process_id: str, message_id: str, *, replay: bool = False) -> Proof:
    """Every Assignment and Result from slot 0 to ``message_id``'s slot, and what they reference.

    Waits (up to the node's result wait) for the message's result to be computed.
    """
    node.result(process_id, message_id)
    _, target = node.scheduled(process_id, message_id)
    last = int(items.first_tag(target, "Nonce") or 0)
    assignments: list[bytes] = []
    results: list[bytes] = []
    messages: list[bytes] = []
    attestations: dict[str, bytes] = {}
    module: bytes | None = None
    while len(assignments) <= last:
        page, _ = node.schedule_page(process_id, from_slot=len(assignments), to_slot=last,
                                     limit=PAGE)
        if not page:
            raise NotFound(f"schedule of {process_id} has a gap at slot {len(assignments)}")
        for _slot, message, assignment in page:
            result = items.parse_trusted(node.result_item(process_id, message.id))
            attestation = items.first_tag(result, "Attestation") or ""
            if attestation not in attestations:
                attestations[attestation] = node.item_raw(attestation)
            assignments.append(assignment.raw)
            results.append(result.raw)
            if replay:
                messages.append(message.raw)
                if module is None:
                    module = node.item_raw(items.first_tag(message, "Module") or "")
    crons = node.cron_results_between(process_id, 0, last - 1) if last > 0 else []
    for raw in crons:
        attestation = items.first_tag(items.parse_trusted(raw), "Attestation") or ""
        if attestation not in attestations:
            attestations[attestation] = node.item_raw(attestation)
    return Proof(process_id, message_id, tuple(assignments), tuple(results),
                 tuple(attestations.values()), tuple(messages), module, tuple(crons))
