"""Section: the whole pipeline as clients meet it — signed aos Pings POSTed over AO's HTTP API to
a real ``ao-appliance serve`` on loopback until each one's signed Result exists — against the same
Pings ingested in process (no HTTP), on one and on several processes."""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.ao import items
from bench.aos_throughput import pipeline_rate
from bench.common import PING_HANDLER, rate
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import start_server

PING: list[tuple[dict[str, str], str]] = [({"Action": "Ping"}, "")]
CLIENTS = 8


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


def http_rate(name: str, count: int, processes: int) -> float:
    """Pings per second from the first POST until every process's last Result exists."""
    with tempfile.TemporaryDirectory(prefix="ao-bench-http-") as tmp:
        server = start_server(Path(tmp) / "node")
        try:
            client = client_identity(Path(tmp) / "client")
            module = upload_module(server, client, name)
            pids = [spawn(server, client, module, f"bench-http-{i}") for i in range(processes)]
            for pid in pids:
                setup = message(client, pid, PING_HANDLER, 0)
                server.post("/", setup.raw)
                server.get(f"/result/{setup.id}?process-id={pid}")
            per = max(1, count // processes)
            batches = {pid: [message(client, pid, "", n, "Ping") for n in range(1, per + 1)]
                       for pid in pids}
            work = [it for n in range(per) for its in batches.values() for it in its[n:n + 1]]
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
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
            return rate(per * processes, time.perf_counter() - start)
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
        over_http = http_rate(name, count, processes)
        log(f"http pipeline: the same Pings in process, {processes} process(es)")
        in_process = pipeline_rate(name, count, processes, PING)
        rows.append({"module": name, "processes": processes, "messages": count,
                     "http_msgs_per_s": over_http, "in_process_msgs_per_s": in_process,
                     "http/in_process": over_http / in_process})
    return rows
