"""plan_commit (appliance.node.commit) decided on plain data: no store, no evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.node.commit import DivergenceKind, plan_commit
from appliance.node.guest import ScheduledSlot
from appliance.node.identity import NodeIdentity
from appliance.node.results import result_data, unsigned_result

PID = "P" * 43


def _slot(n: int) -> ScheduledSlot:
    return ScheduledSlot(PID, n, f"m{n}", f"a{n}", f"h{n}", 1000 + n, 1, "att", 0)


def _out(text: str, messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"Output": text, "Messages": messages or [], "Spawns": [], "Assignments": [],
            "GasUsed": 0}


def _plan(tmp_path: Path, outputs: list[dict[str, Any]], stored: dict[int, tuple[str, bytes]],
          intents: dict[int, Any], limited: list[int]) -> Any:
    identity = NodeIdentity.load_or_create(tmp_path)

    def limit(s: ScheduledSlot, out: dict[str, Any]) -> dict[str, Any]:
        limited.append(s.slot)
        return out

    return identity, plan_commit([_slot(i) for i in range(len(outputs))], outputs, stored,
                                 intents, head=None, attestation_id="att", signer=identity,
                                 module_id="M", max_push_depth=4, limit=limit)


def test_fresh_slots_get_intents_and_chain_their_results(tmp_path: Path) -> None:
    limited: list[int] = []
    _, plan = _plan(tmp_path, [_out("a"), _out("b", [{"Target": PID, "Tags": []}])], {}, {},
                    limited)
    assert [i.slot for i in plan.intents] == [0, 1] and limited == [0, 1]
    first, second = (r.item for r in plan.results)
    assert items.first_tag(first, "Previous-Result") is None
    assert items.first_tag(second, "Previous-Result") == first.id
    assert plan.head == second.id and not plan.divergences and not plan.replays
    assert [len(o.outgoing) for o in plan.outboxes] == [0, 1]


def test_stored_slots_are_replays_and_differences_are_divergences(tmp_path: Path) -> None:
    limited: list[int] = []
    stored = {0: ("R0", result_data(_out("a"))), 1: ("R1", result_data(_out("other")))}
    _, plan = _plan(tmp_path, [_out("a"), _out("b"), _out("c")], stored, {}, limited)
    assert plan.replays == (0, 1) and limited == [2]
    assert [(d.slot, d.kind) for d in plan.divergences] == [(1, DivergenceKind.REPLAY)]
    assert [r.slot.slot for r in plan.results] == [2]
    assert items.first_tag(plan.results[0].item, "Previous-Result") == "R1"


def test_a_recorded_intent_is_signed_as_it_is(tmp_path: Path) -> None:
    limited: list[int] = []
    intent = unsigned_result(_slot(0), _out("recorded"), None, "att")
    _, plan = _plan(tmp_path, [_out("fresh")], {}, {0: intent}, limited)
    assert not plan.intents and not limited
    assert plan.results[0].item.data == intent.data
    assert plan.results[0].output["Output"] == "recorded"
    assert [(d.slot, d.kind) for d in plan.divergences] == [(0, DivergenceKind.INTENT)]
