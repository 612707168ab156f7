"""What committing an evaluated batch means, decided without I/O: a :class:`CommitPlan`.

:func:`plan_commit` takes a batch's slots and outputs with what the store already holds for them
(signed results, recorded intents) and decides per slot, in slot order:

1. a slot with a stored result is a *replay*: its output is compared with the stored data (a
   difference is a divergence) and its result id continues the chain; nothing is signed again;
2. a slot with a recorded intent signs that intent as it is (a fresh output that differs is a
   divergence: the recorded one wins, so a slot never gets two different signed Results);
3. any other slot gets a new intent from its (outbox-limited) output, to be recorded durably
   before any of the batch's signed items is stored.

Each signed Result names the one before it (``Previous-Result``), and each signed output's
outbox is signed as well; signing is deterministic (ed25519), so the plan is a function of its
inputs. The shard applies the plan: record ``intents``, then store ``results`` and push
``outboxes`` in one transaction (see ``Shard._commit_results``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from appliance.ao import items
from appliance.node.crank import same_evaluation
from appliance.node.guest import ScheduledSlot
from appliance.node.identity import NodeIdentity
from appliance.node.messenger import Outbox, PushContext, prepare_outbox
from appliance.node.results import UnsignedResult, unsigned_result

OutboxLimit = Callable[[ScheduledSlot, dict[str, Any]], dict[str, Any]]
"""``limit(slot, output)``: the output with its outbox cut to what may be sent; called once per
slot that needs a new intent, in slot order (it may count what it lets through)."""


class DivergenceKind(StrEnum):
    """Which recorded form a re-evaluated output differs from."""

    REPLAY = "replay"
    """The stored signed Result (the stored one stands)."""
    INTENT = "intent"
    """The recorded intent (the intent is what gets signed)."""


@dataclass(frozen=True)
class Divergence:
    """A slot whose evaluation now differs from what was recorded for it."""

    slot: int
    kind: DivergenceKind


@dataclass(frozen=True)
class SignedResult:
    """One Result to store: its slot, the signed item, and the output its data says."""

    slot: ScheduledSlot
    item: items.Item
    output: dict[str, Any]


@dataclass(frozen=True)
class CommitPlan:
    """What to write for one evaluated batch, in order."""

    intents: tuple[UnsignedResult, ...]
    """New intents, recorded (durably) before anything signed is stored."""
    results: tuple[SignedResult, ...]
    """Signed Results to store, in slot order."""
    outboxes: tuple[Outbox, ...]
    """The signed outbox of each of ``results``, pushed in the same transaction."""
    replays: tuple[int, ...]
    """Slots that already had a stored result (compared, not signed again)."""
    divergences: tuple[Divergence, ...]
    head: str | None
    """The chain's head after the batch: the last Result id, stored or planned."""


def plan_commit(slots: Sequence[ScheduledSlot], outputs: Sequence[dict[str, Any]],
                stored: Mapping[int, tuple[str, bytes]], intents: Mapping[int, UnsignedResult],
                *, head: str | None, attestation_id: str, signer: NodeIdentity, module_id: str,
                max_push_depth: int, limit: OutboxLimit) -> CommitPlan:
    """Decide what committing ``outputs`` of ``slots`` writes (see the module docstring).

    ``stored`` maps slot → (result id, data) of stored results, ``intents`` slot → recorded
    intent, ``head`` is the Result id the first slot's Result follows (None for slot 0).
    """
    fresh: list[UnsignedResult] = []
    results: list[SignedResult] = []
    outboxes: list[Outbox] = []
    replays: list[int] = []
    divergences: list[Divergence] = []
    for s, out in zip(slots, outputs, strict=True):
        done = stored.get(s.slot)
        if done is not None:
            if not same_evaluation(done[1], out):
                divergences.append(Divergence(s.slot, DivergenceKind.REPLAY))
            replays.append(s.slot)
            head = done[0]
            continue
        unsigned = intents.get(s.slot)
        if unsigned is None:
            signed_out = limit(s, out)
            unsigned = unsigned_result(s, signed_out, head, attestation_id)
            fresh.append(unsigned)
        else:
            signed_out = json.loads(unsigned.data)
            if not same_evaluation(unsigned.data, out):
                divergences.append(Divergence(s.slot, DivergenceKind.INTENT))
        item = unsigned.sign(signer)
        head = item.id
        results.append(SignedResult(s, item, signed_out))
        outboxes.append(prepare_outbox(signer, PushContext(s, module_id, max_push_depth),
                                       signed_out))
    return CommitPlan(tuple(fresh), tuple(results), tuple(outboxes), tuple(replays),
                      tuple(divergences), head)
