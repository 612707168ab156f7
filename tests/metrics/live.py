"""A node with metrics on, its AO HTTP API and /metrics listener on loopback, and scrape helpers."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from appliance.ao import items
from appliance.api.http import make_app
from appliance.compute import jsjson
from appliance.metrics import NodeMetrics
from appliance.node.guest import ScheduledSlot, guest_message
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.settings import NodeSettings
from attestation.providers import EmulatedProvider
from tests.support.paths import REPO, _missing

HOSTILE_WAT = REPO / "tests" / "compute" / "hostile.wat"
FORMAT = "wasm32-unknown-emscripten4"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Live:
    """The running node and where it listens."""

    node: Node
    metrics: NodeMetrics
    url: str
    metrics_url: str

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request to the AO HTTP API."""
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, bytes(exc.read())

    def post_item(self, item: items.Item | bytes) -> tuple[int, Any]:
        """POST a data item to ``/``; (status, JSON body)."""
        raw = item if isinstance(item, bytes) else item.raw
        status, body = self.request("POST", "/", raw)
        return status, json.loads(body)


def scrape(url: str) -> tuple[str, str]:
    """(content type, text) of ``GET url``."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.headers["Content-Type"], resp.read().decode("utf-8")


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(data: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as a counter that never moved is)."""
    return data.get((name, tuple(sorted(labels.items()))), 0.0)


def promtool() -> str:
    """The promtool binary (skips, or fails under AO_APPLIANCE_REQUIRE_PROMTOOL=1, if absent)."""
    path = shutil.which("promtool")
    if path is None:
        _missing("promtool not installed (Debian package prometheus)",
                 "AO_APPLIANCE_REQUIRE_PROMTOOL")
    assert path is not None
    return path


def promtool_check(exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` over ``exposition`` (clean: exit 0, no output)."""
    return subprocess.run([promtool(), "check", "metrics"], input=exposition,
                          capture_output=True, text=True, timeout=60)


def data_offset(directory: Path) -> int:
    """Where the first byte of Data sits in the message JSON the node hands ``handle``.

    Only Id and Signature precede Data, and both have a fixed length for ed25519 items.
    """
    client = NodeIdentity.load_or_create(directory)
    item = items.sign(client, tags=[("Type", "Message")], data=b"E", anchor=b"\0" * 32)
    slot = ScheduledSlot("p", 1, item.id, "a", "h", 0, 0, "t", 0)
    text = jsjson.stringify(guest_message(item, slot))
    return text.index(b'"Data":"') + len(b'"Data":"')


def dispatch_wasm(directory: Path) -> bytes:
    """hostile.wat, dispatching on the first byte of the message's Data instead of its Action."""
    text = HOSTILE_WAT.read_text()
    probe = "(local.get $msg) (i32.const 11)"
    assert probe in text
    return bytes(wasmtime.wat2wasm(text.replace(
        probe, f"(local.get $msg) (i32.const {data_offset(directory)})")))


@contextmanager
def serve_with_metrics(data_dir: Path, **settings: Any) -> Iterator[Live]:
    """A node whose observer is a NodeMetrics, served on loopback from a background loop."""
    metrics = NodeMetrics()
    node = Node(NodeSettings(data_dir=data_dir / "node", **settings),
                NodeIdentity.load_or_create(data_dir / "node"),
                EmulatedProvider(data_dir / "tee"), b"\1" * 32, observer=metrics)
    metrics.attach(node)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(make_app(node, metrics.observe_http))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        box["runners"] = [runner, await metrics.start_server("127.0.0.1", 0)]
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(30)
    api, scraper = (r.addresses[0][1] for r in box["runners"])
    try:
        yield Live(node, metrics, f"http://127.0.0.1:{api}",
                   f"http://127.0.0.1:{scraper}/metrics")
    finally:
        for runner in box["runners"]:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        node.close()
