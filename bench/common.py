"""Shared pieces of the benchmarks: modules, message streams, a node to drive, timing."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.node.guest import ScheduledSlot, guest_env, guest_message
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.observer import NodeObserver
from appliance.node.remote_shard import process_shards
from appliance.node.settings import NodeSettings
from attestation.evidence import Platform
from attestation.providers import EmulatedProvider

REPO = Path(__file__).resolve().parents[1]
JS_DIR = REPO / "tests" / "js"
OWNER = "O" * 43
PING_HANDLER = "Handlers.add('ping', 'Ping', function(m) m.reply({Data = 'Pong'}) end)"
TOKEN_HANDLER = """
Balances = Balances or { [Owner] = 1000000000000 }
Handlers.add('transfer', 'Transfer', function(m)
  local qty = tonumber(m.Quantity)
  local from = m.From
  if (Balances[from] or 0) >= qty then
    Balances[from] = Balances[from] - qty
    Balances[m.Recipient] = (Balances[m.Recipient] or 0) + qty
    m.reply({ Action = 'Debit-Notice', Recipient = m.Recipient, Quantity = tostring(qty) })
    Send({ Target = m.Recipient, Action = 'Credit-Notice', Sender = from,
           Quantity = tostring(qty) })
  else
    m.reply({ Action = 'Transfer-Error', Error = 'Insufficient Balance!' })
  end
end)
"""
RECIPIENT = "R" * 43
# (tags, data) of the three workload kinds, cycled.
WORKLOAD: list[tuple[dict[str, str], str]] = [
    ({"Action": "Eval"}, "return 1"),
    ({"Action": "Ping"}, ""),
    ({"Action": "Transfer", "Recipient": RECIPIENT, "Quantity": "1"}, ""),
]
SETUP: list[tuple[dict[str, str], str]] = [
    ({"Action": "Eval"}, PING_HANDLER), ({"Action": "Eval"}, TOKEN_HANDLER)]


def _client() -> NodeIdentity:
    with tempfile.TemporaryDirectory() as tmp:
        return NodeIdentity.load_or_create(Path(tmp))


def module_tags(fmt: str) -> list[tuple[str, str]]:
    """Tags of the bench's Module item. Every section uses these and :func:`process_tags`: they
    reach the guest in ``env`` on every message, and aos spends longer per message on a richer
    env (~9 % from the last three tags here), so all four ways must see the same."""
    return [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Module"),
            ("Module-Format", fmt), ("Memory-Limit", "1-gb"), ("Compute-Limit", "9000000000000")]


def process_tags(module_id: str, scheduler: str, name: str) -> list[tuple[str, str]]:
    """Tags of a bench Process item."""
    return [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
            ("Module", module_id), ("Scheduler", scheduler), ("Authority", scheduler),
            ("Name", name)]


def shaped(kinds: list[tuple[dict[str, str], str]],
           fmt: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The process message then one message per (tags, data), and the env, shaped exactly as
    the node hands them to the module (signed items through ``guest_message``/``guest_env``)."""
    client = _client()
    module = items.sign(client, data=b"module", tags=module_tags(fmt))
    process = items.sign(client, anchor=b"bench-0".ljust(32, b"."),
                         tags=process_tags(module.id, OWNER, "bench-0"))
    msgs = [process] + [
        items.sign(client, target=process.id, data=data.encode(),
                   anchor=f"{n:032d}".encode(), tags=[
                       ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"),
                       *tags.items()])
        for n, (tags, data) in enumerate(kinds)]
    out = [guest_message(item, ScheduledSlot(process.id, n, item.id, "A" * 43, "H" * 43,
                                             1_700_000_000_000 + n * 1000, 1000 + n, "", 0))
           for n, item in enumerate(msgs)]
    return out, guest_env(process, module)


def streams(count: int, fmt: str, kinds: list[tuple[dict[str, str], str]] = WORKLOAD
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(process message + setup, workload of ``count`` messages cycling ``kinds``, env)."""
    msgs, env = shaped([*SETUP, *(kinds[i % len(kinds)] for i in range(count))], fmt)
    return msgs[:1 + len(SETUP)], msgs[1 + len(SETUP):], env


def node_binary() -> str | None:
    """The ``node`` executable, or None."""
    return shutil.which("node")


def run_loader(module: Path, fmt: str, mode: str, count: int,
               kinds: list[tuple[dict[str, str], str]] = WORKLOAD) -> float:
    """Messages per second through @permaweb/ao-loader in ``mode`` (legacy | resident)."""
    node = node_binary()
    if node is None or not (JS_DIR / "node_modules" / "@permaweb" / "ao-loader").is_dir():
        raise RuntimeError("node and tests/js/node_modules are needed (bash tests/run.sh once)")
    setup, workload, env = streams(count, fmt, kinds)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"js_dir": str(JS_DIR), "module": str(module), "format": fmt, "env": env,
                   "setup": setup, "workload": workload, "mode": mode}, spec)
    try:
        flags = ["--experimental-wasm-memory64"] if fmt.startswith("wasm64") else []
        proc = subprocess.run([node, *flags, str(REPO / "bench" / "loader.mjs"), spec.name],
                              capture_output=True, text=True, timeout=3600, check=False)
    finally:
        Path(spec.name).unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"ao-loader bench failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(out["messages"]) / float(out["seconds"])


class BusyCores:
    """The machine's busy CPU time over a stretch of wall time, from ``/proc/stat`` (every
    process, ours and anyone else's), as cores: ``with BusyCores() as busy: ...; busy.cores``."""

    cores = 0.0

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:8]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    def __enter__(self) -> BusyCores:
        self._start, self._wall = self._read(), time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        (total, idle), (total0, idle0) = self._read(), self._start
        seconds = time.perf_counter() - self._wall
        hz = os.sysconf("SC_CLK_TCK")
        self.cores = ((total - total0) - (idle - idle0)) / hz / seconds if seconds > 0 else 0.0


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / seconds if seconds > 0 else float("inf")


def best_of(runs: int, fn: Callable[[], float]) -> float:
    """Median of ``runs`` calls of ``fn`` (each returning a rate)."""
    return statistics.median(fn() for _ in range(runs))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class Pipeline:
    """A node in this process, a client key, and helpers to spawn and message processes."""

    node: Node
    client: NodeIdentity
    module_id: str
    counter: int = 0

    def item(self, process: str, tags: dict[str, str], data: str) -> items.Item:
        """A signed client Message (pre-signed before timing starts)."""
        self.counter += 1
        return items.sign(self.client, target=process, data=data.encode(),
                          anchor=f"{self.counter:032d}".encode(),
                          tags=[("Data-Protocol", "ao"), ("Variant", "ao.TN.1"),
                                ("Type", "Message"), *tags.items()])

    def spawn(self, name: str) -> str:
        """A new process of the module, scheduled on this node."""
        proc = items.sign(self.client, anchor=name.encode().ljust(32, b"."),
                          tags=process_tags(self.module_id, self.node.identity.address, name))
        self.node.ingest(proc.raw)
        self.node.result(proc.id, proc.id)
        return proc.id

    def spawn_spread(self, count: int) -> list[str]:
        """``count`` new processes, placed round robin over the node's shards."""
        pids: list[str] = []
        names = (f"spread-{k}" for k in range(100_000))
        while len(pids) < count:
            name = next(names)
            proc = items.sign(self.client, anchor=name.encode().ljust(32, b"."),
                              tags=process_tags(self.module_id, self.node.identity.address, name))
            if self.node.placement.owner(proc.id) == len(pids) % self.node.placement.count:
                pids.append(self.spawn(name))
        return pids

    def send_all(self, batches: dict[str, list[items.Item]], clients: int) -> float:
        """Ingest every batch from ``clients`` threads; return seconds until all results exist."""
        work = [(pid, it) for pid, its in batches.items() for it in its]
        shares = [work[i::clients] for i in range(clients)]
        start = time.perf_counter()
        threads = [threading.Thread(target=lambda s=s: [self.node.ingest(it.raw) for _, it in s])
                   for s in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for pid, its in batches.items():
            self.node.result(pid, its[-1].id)
        return time.perf_counter() - start


@contextmanager
def pipeline(module_bytes: bytes, fmt: str, workers: int = 2, shards: int = 1,
             **settings: Any) -> Iterator[Pipeline]:
    """A fresh node (emulated TEE, SQLite in a temp dir) with ``module_bytes`` uploaded; with
    ``shards`` > 1 its shards run in processes of their own (as ``serve --shards``)."""
    with tempfile.TemporaryDirectory(prefix="ao-bench-") as tmp:
        base = Path(tmp)
        config = NodeSettings(data_dir=base / "node", workers=workers, shards=shards, **settings)
        identity = NodeIdentity.load_or_create(base / "node")
        provider = EmulatedProvider(base / "tee")
        remote = None if shards == 1 else process_shards(
            config, key_dir=base / "node", tee=Platform.EMULATED, tee_state_dir=base / "tee",
            config_digest=b"\0" * 32, log_level="warning", observer=NodeObserver())
        node = Node(config, identity, provider, b"\0" * 32, shards=remote)
        try:
            client = NodeIdentity.load_or_create(base / "client")
            module = items.sign(client, data=module_bytes, tags=module_tags(fmt))
            node.ingest(module.raw)
            yield Pipeline(node, client, module.id)
        finally:
            node.close()
