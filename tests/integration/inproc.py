"""A node and its AO HTTP API served from a background thread on a loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from appliance.api.http import make_app, start_site
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.settings import NodeSettings
from tests.integration.server import Server


@contextmanager
def serve_in_thread(data_dir: Path, provider: Any,
                    **settings: Any) -> Iterator[tuple[Server, Node]]:
    """Yield a :class:`Server` view (url, address) and the node behind it."""
    node = Node(NodeSettings(data_dir=data_dir, **settings), NodeIdentity.load_or_create(data_dir),
                provider, b"\1" * 32)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        runner = await start_site(make_app(node), socket.create_server(("127.0.0.1", 0)))
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(30)
    url = f"http://127.0.0.1:{box['port']}"
    node.publish_location(url)
    try:
        yield Server(None, url, node.identity.address, data_dir), node  # type: ignore[arg-type]
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        node.close()
