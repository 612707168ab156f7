"""The node façade every front-end calls (HTTP, gRPC, metrics, proof export)."""

from __future__ import annotations

from appliance.node.shard import ALL_SLOTS, ProgressListener, Receipt, Shard

Node = Shard

__all__ = ["ALL_SLOTS", "Node", "ProgressListener", "Receipt"]
