"""``--replay``: re-evaluate a proof's schedule from slot 0 and compare every Result's data."""

from __future__ import annotations

from pathlib import Path

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.compute.jsjson import stringify
from appliance.compute.limits import limits_from_tags
from appliance.errors import ApplianceError
from appliance.node import items
from appliance.node.guest import ScheduledSlot, guest_env, guest_message, tag_list
from appliance.node.results import result_data
from appliance.proof.bundle import Proof
from appliance.proof.check import CheckFailed


def replay_proof(proof: Proof, cache_dir: Path, limits: ComputeLimits) -> str:
    """Evaluate the proof's messages in a fresh engine; raise CheckFailed on the first mismatch.

    ``limits`` are the node's defaults; module and process tags adjust them as on the node.
    """
    if proof.module is None or len(proof.messages) != len(proof.results):
        raise CheckFailed("the bundle has no module/messages to replay (export it with replay)")
    module = items.parse_trusted(proof.module)
    process = items.parse_trusted(proof.messages[0])
    if process.id != proof.process_id:
        raise CheckFailed("slot 0 of the bundle is not the process item")
    try:
        engine = ComputeEngine(cache_dir)
        loaded = engine.load(module.data, module_format(items.first_tag(module, "Module-Format")
                                                        or ""))
        instance = engine.instantiate(loaded, limits_from_tags(
            tag_list(module.tags) + tag_list(process.tags), limits))
    except ApplianceError as exc:
        raise CheckFailed(f"module cannot be loaded for replay: {exc}") from None
    env = stringify(guest_env(process, module))
    for slot, (raw_message, raw_assignment, raw_result) in enumerate(
            zip(proof.messages, proof.assignments, proof.results, strict=True)):
        message = items.parse_trusted(raw_message)
        assignment = items.parse_trusted(raw_assignment)
        scheduled = ScheduledSlot(
            proof.process_id, slot, message.id, assignment.id,
            items.first_tag(assignment, "Hash-Chain") or "",
            int(items.first_tag(assignment, "Timestamp") or 0),
            int(items.first_tag(assignment, "Block-Height") or 0), "", 0)
        if message.id != items.first_tag(assignment, "Message"):
            raise CheckFailed(f"slot {slot}: message item is not the assigned one")
        out = instance.handle_json(stringify(guest_message(message, scheduled)), env).as_json()
        if result_data(out) != items.parse_trusted(raw_result).data:
            raise CheckFailed(f"slot {slot}: replayed result differs from the signed Result")
    return f"{len(proof.results)} slots re-evaluated, identical"
