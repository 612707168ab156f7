"""What a shard asks the rest of the node: who owns a process, and delivery to the owner.

A shard owns its processes end to end; an outbox item (Message, Spawn, Assignment) whose target
another shard owns is pushed there through its :class:`ShardRouter`. The :class:`~appliance.node
.node.Node` façade gives each shard one (in-process shards call each other directly; a shard in
its own process reaches the others through the front).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from appliance.errors import ApplianceError
    from appliance.node.shard import Receipt


class ShardRouter(Protocol):
    """The node as one shard sees it."""

    def owns(self, process_id: str) -> bool:
        """True when this shard holds ``process_id``, or when no shard does (a target that is no
        process of this node, a wallet say, is then refused here, as on a one-shard node,
        instead of being pushed to a shard that would refuse it too)."""
        ...

    def places(self, process_id: str) -> bool:
        """True when a new process with id ``process_id`` is placed on this shard."""
        ...

    def placed(self, process_id: str) -> None:
        """This shard now holds ``process_id`` (a Spawn it scheduled itself), so the node routes
        to it from now on."""
        ...

    def push(self, target: str, raw: bytes, kind: str, push_depth: int) -> None:
        """Deliver a node-signed item (``kind``: ``message``, ``spawn`` or ``assignment``) to
        the shard owning ``target``; returns once that shard stored it durably (idempotent by the
        item's id), raises an ``ApplianceError`` when it refused it."""
        ...

    def module(self, module_id: str) -> bytes | None:
        """The raw Module item ``module_id`` from any shard holding it, or None."""
        ...


class PeerRouter(Protocol):
    """The other nodes as the :class:`~appliance.node.node.Node` façade sees them (the network
    package gives one to a serving node): where an item it cannot take goes, and modules."""

    def forward(self, raw: bytes, refusal: ApplianceError) -> Receipt:
        """Deliver the client item ``raw``, refused here with ``refusal`` (NotHosted, NotFound),
        to the peer hosting its process and return that peer's receipt; raise ``refusal`` (or a
        clearer one naming the right node) when no peer takes it."""
        ...

    def module(self, module_id: str) -> bytes | None:
        """The raw Module item ``module_id`` from a peer, checked (signature, id, type); None
        when no peer has it."""
        ...

    def forwards_by_status(self) -> dict[str, int]:
        """Forwarded items keyed by status (``pending``, ``delivered``, ``failed``)."""
        ...


class SoleShard:
    """The router of a node with one shard: it owns everything, there is nowhere to push; a
    module it lacks may come from ``modules`` (the node's peers)."""

    def __init__(self, modules: Callable[[str], bytes | None] | None = None) -> None:
        self._modules = modules

    def owns(self, process_id: str) -> bool:
        """Every process belongs to the only shard."""
        return True

    def places(self, process_id: str) -> bool:
        """Every new process is placed on the only shard."""
        return True

    def placed(self, process_id: str) -> None:
        """Nothing to tell."""

    def push(self, target: str, raw: bytes, kind: str, push_depth: int) -> None:
        """Never called: nothing is owned elsewhere."""
        raise AssertionError(f"no other shard to push {kind} for {target} to")

    def module(self, module_id: str) -> bytes | None:
        """No other shard holds anything: ask ``modules``, if given."""
        return self._modules(module_id) if self._modules is not None else None
