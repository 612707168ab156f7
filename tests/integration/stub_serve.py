"""``python -m tests.integration.stub_serve DATA_DIR``: the real node and HTTP server in a process
of its own, with the test evidence provider (for crash tests that do not exercise attestation)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from appliance.api.http import make_app
from appliance.cli.serve_cmd import _serve_http
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.settings import NodeSettings
from attestation.providers import EmulatedProvider


def main() -> None:
    data = Path(sys.argv[1])
    node = Node(NodeSettings(data_dir=data, checkpoint_every_messages=25),
                NodeIdentity.load_or_create(data), EmulatedProvider(data / "tee"), b"\2" * 32)
    try:
        asyncio.run(_serve_http(make_app(node), ("127.0.0.1", 0)))
    finally:
        node.close()


if __name__ == "__main__":
    main()
