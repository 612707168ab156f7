"""``--replay``: re-evaluate a proof's schedule from slot 0 and compare every Result's data."""

from __future__ import annotations

from pathlib import Path

from appliance.ao import items
from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.compute.jsjson import stringify
from appliance.compute.limits import limits_from_tags
from appliance.errors import ApplianceError
from appliance.node.crank import same_evaluation
from appliance.node.cron import Boundary, cron_message, parse_crons, ticks_between
from appliance.node.guest import ScheduledSlot, guest_env, guest_message, tag_list
from appliance.proof.bundle import Proof
from appliance.proof.check import CheckFailed


def replay_proof(proof: Proof, cache_dir: Path, limits: ComputeLimits) -> str:
    """Evaluate the proof's messages in a fresh engine; raise CheckFailed on the first mismatch.

    Cron messages are re-derived from the assignments' timestamps (no blocks: the node's only
    block boundaries are changes of its configured height) and evaluated between the slots.

    ``limits`` are the node's defaults; module and process tags adjust them as on the node.
    """
    if proof.module is None or len(proof.messages) != len(proof.results):
        raise CheckFailed("the bundle has no module/messages to replay (export it with replay)")
    module = items.parse_unverified(proof.module)
    process = items.parse_unverified(proof.messages[0])
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
    crons = parse_crons(process.tags)
    signed_crons = [items.parse_unverified(raw) for raw in proof.crons]
    replayed_crons = 0
    origin: Boundary | None = None
    left = Boundary(0, 0, 0)
    for slot, (raw_message, raw_assignment, raw_result) in enumerate(
            zip(proof.messages, proof.assignments, proof.results, strict=True)):
        message = items.parse_unverified(raw_message)
        assignment = items.parse_unverified(raw_assignment)
        scheduled = ScheduledSlot(
            proof.process_id, slot, message.id, assignment.id,
            items.first_tag(assignment, "Hash-Chain") or "",
            int(items.first_tag(assignment, "Timestamp") or 0),
            int(items.first_tag(assignment, "Block-Height") or 0), "", 0)
        if message.id != items.first_tag(assignment, "Message"):
            raise CheckFailed(f"slot {slot}: message item is not the assigned one")
        here = Boundary(scheduled.timestamp_ms, scheduled.block_height, slot)
        if origin is not None and crons:
            ticks = ticks_between(crons, origin, left, here.timestamp_ms, limit=10**9)
            for tick in ticks:
                if replayed_crons >= len(signed_crons):
                    raise CheckFailed(f"cron {tick.cron} at {tick.timestamp_ms} after slot "
                                      f"{tick.ordinate} has no cron Result in the bundle")
                signed = signed_crons[replayed_crons]
                expect = {"Cron": tick.cron, "Ordinate": str(tick.ordinate),
                          "Timestamp": str(tick.timestamp_ms),
                          "Block-Height": str(tick.block_height)}
                if any(items.first_tag(signed, k) != v for k, v in expect.items()):
                    raise CheckFailed(f"cron Result {signed.id} is not the cron message the "
                                      f"schedule implies next ({expect})")
                out = instance.handle_json(stringify(cron_message(
                    tick, proof.process_id, process.owner_address)), env).as_json()
                if not same_evaluation(signed.data, out):
                    raise CheckFailed(f"cron {tick.cron} at {tick.timestamp_ms}: replayed "
                                      "result differs from the signed Result")
                replayed_crons += 1
        origin = origin or here
        left = here
        out = instance.handle_json(stringify(guest_message(message, scheduled)), env).as_json()
        if not same_evaluation(items.parse_unverified(raw_result).data, out):
            raise CheckFailed(f"slot {slot}: replayed result differs from the signed Result")
    if replayed_crons != len(signed_crons):
        raise CheckFailed(f"the bundle holds {len(signed_crons)} cron Results; the schedule "
                          f"implies {replayed_crons}")
    crons_done = f" and {replayed_crons} cron messages" if replayed_crons else ""
    return f"{len(proof.results)} slots{crons_done} re-evaluated, identical"
