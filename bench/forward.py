"""Any node is a messenger: what posting to the wrong node costs. Two real ``serve``s on loopback,
peered; an aos process on B. One closed-loop client posts signed Evals (``return 1``) and waits
for each one's receipt: straight to B (the anchor) and to A, which forwards them to B, in
interleaved rounds; then the same for ``GET /result`` (read on B vs relayed by A). Prints the
p50/p99 of each and the ratios to the anchor.
Run alone: ``python -m bench.forward [--messages 100 --rounds 3]``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import percentile
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.peering import command, free_port, peer_known, poll
from tests.integration.server import Server, start_server


def _post(url: str, raw: bytes) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(url + "/", data=raw, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert answer.status == 202, answer.status
        answer.read()
    return time.perf_counter() - started


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        answer.read()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print one JSON line per row."""
    parser = argparse.ArgumentParser(prog="python -m bench.forward")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            base = Path(tmp)
            port_a, port_b = free_port(), free_port()
            url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
            a = start_server(base / "a", command(port_a, url_b))
            servers.append(a)
            b = start_server(base / "b", command(port_b, url_a))
            servers.append(b)
            poll("a to learn b", peer_known(a, url_b, b.address))
            client = client_identity(base / "client")
            process = spawn(b, client, upload_module(b, client), "bench")
            n = 0
            posts: dict[str, list[float]] = {"direct": [], "forwarded": []}
            reads: dict[str, list[float]] = {"direct": [], "relayed": []}
            for _ in range(args.rounds):
                for kind, url in (("direct", b.url), ("forwarded", a.url)):
                    for _ in range(args.messages):
                        n += 1
                        item = message(client, process, "return 1", n)
                        posts[kind].append(_post(url, item.raw))
                        path = f"/result/{item.id}?process-id={process}"
                        _get(b.url + path)  # computed before reads are timed
                        read = "direct" if kind == "direct" else "relayed"
                        reads[read].append(_get((b.url if read == "direct" else a.url) + path))
                print(f"round done ({n} messages)", file=sys.stderr)
        finally:
            for srv in servers:
                srv.stop()
    for label, table, anchor in (("POST /", posts, "direct"), ("GET /result", reads, "direct")):
        base_p50 = percentile(table[anchor], 50)
        for kind, values in table.items():
            p50, p99 = percentile(values, 50), percentile(values, 99)
            print(json.dumps({"route": label, "kind": kind, "count": len(values),
                              "p50_ms": round(p50 * 1000, 2), "p99_ms": round(p99 * 1000, 2),
                              "p50_vs_direct": round(p50 / base_p50, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
