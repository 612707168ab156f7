"""What the peer-trust gate costs on the ingest path, against the item's own signature check.

The gate ``Node.ingest`` runs on an item: a byte scan for ``From-Process`` (all an item without
it pays), then for a push an unverified parse and the cached-verdict decision
(:func:`appliance.network.trust.gate`). The anchor is ``items.parse_verified`` of the same item,
which every ingested item pays anyway. Run: ``.venv/bin/python -m bench.peer_gate``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from appliance.ao import items
from appliance.network.trust import TrustState, Verdict, gate
from appliance.node.identity import NodeIdentity

MAX = 1 << 30


def _best(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def run(number: int) -> dict[str, float]:
    """Seconds per call of each step (best of 5 rounds of ``number`` calls)."""
    with tempfile.TemporaryDirectory() as tmp:
        own = NodeIdentity.load_or_create(Path(tmp) / "own")
        peer = NodeIdentity.load_or_create(Path(tmp) / "peer")
    tags = [("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Eval")]
    push = items.sign(peer, target="q" * 43, data=b"x" * 200, anchor=b"0" * 32,
                      tags=[*tags, ("From-Process", "f" * 43)]).raw
    plain = items.sign(peer, target="q" * 43, data=b"x" * 200, anchor=b"1" * 32, tags=tags).raw
    state = TrustState(peer.address, "http://peer", Verdict(peer.address, "trusted", "ok"),
                       due_ms=2**62)

    def gate_push() -> None:
        if b"From-Process" in push:
            item = items.parse_unverified(push, MAX)
            assert gate(item.owner_address, own.address, state, True, 0) is None

    return {"gate_push_s": _best(gate_push, number),
            "scan_plain_s": _best(lambda: b"From-Process" in plain, number),
            "anchor_parse_verified_s": _best(lambda: items.parse_verified(push, MAX),
                                             max(1, number // 10))}


def main() -> None:
    """Print the figures and their ratios to the anchor."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20_000)
    figures = run(parser.parse_args().number)
    anchor = figures["anchor_parse_verified_s"]
    print(f"gate on a push      {figures['gate_push_s'] * 1e6:8.2f} us  "
          f"{figures['gate_push_s'] / anchor:.3f}x anchor")
    print(f"scan of a non-push  {figures['scan_plain_s'] * 1e6:8.2f} us  "
          f"{figures['scan_plain_s'] / anchor:.4f}x anchor")
    print(f"anchor: signature   {anchor * 1e6:8.2f} us  (items.parse_verified, same item)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
