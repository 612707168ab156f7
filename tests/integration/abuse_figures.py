"""Before/after figures of issue 12 items 4-5 against a real ``serve`` of any checkout.

    python -m tests.integration.abuse_figures CHECKOUT WORKDIR attest state waiters dryrun \
        dribble proof            (SLOTS=10000 sets the proof's history length)

CHECKOUT is the tree whose ``serve`` is measured (this one, or ``git worktree add /tmp/old
10f4232``); the configurations used are valid for both. Figures are printed, never asserted.
"""
import contextlib
import json
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import Server

REPO, WORK = Path(sys.argv[1]), Path(sys.argv[2])
WHAT = sys.argv[3:]
PY = sys.executable


def start(name: str, config: str) -> Server:
    """A ``serve`` of CHECKOUT with ``config``, in WORKDIR/name."""
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "c.yaml").write_text(config)
    proc = subprocess.Popen([PY, "-m", "appliance.cli", "serve", "--http", "127.0.0.1:0",
                             "--tee", "emulated", "--config", str(d / "c.yaml"),
                             "--data-dir", str(d / "n")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"listening"' in line:
            event = json.loads(line)
            return Server(proc, f"http://{event['http']}", event["address"], d / "n")
    raise RuntimeError("the node did not start")


def get(srv: Server, path: str, timeout: float = 600) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(srv.url + path, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


def aos(srv: Server) -> tuple[Any, str]:
    client = client_identity(WORK / "client")
    process = spawn(srv, client, upload_module(srv, client), f"m{time.time_ns()}")
    get(srv, f"/result/{process}?process-id={process}")
    return client, process


def send(srv: Server, client: Any, process: str, code: str, n: int) -> str:
    item = message(client, process, code, n)
    status, body = srv.post("/", item.raw)
    assert status == 202, body
    return item.id


def attest() -> None:
    srv = start("att", "")
    db = f"file:{srv.data_dir / 'node.sqlite3'}?mode=ro"

    def rows() -> int:
        with sqlite3.connect(db, uri=True) as conn:
            return int(conn.execute("SELECT (SELECT count(*) FROM items) + "
                                    "(SELECT count(*) FROM item_tags)").fetchone()[0])

    before = rows()
    codes: dict[int, int] = {}
    for i in range(200):
        status, _ = get(srv, f"/attestation?nonce=bm9uY2U{i % 10}")
        codes[status] = codes.get(status, 0) + 1
    print("attestation: 200 calls ->", codes, "rows stored (items + tags):", rows() - before)
    srv.stop()


def proof() -> None:
    n = int(os.environ.get("SLOTS", "5000"))
    srv = start("proof", "node:\n  checkpoint_every_messages: 100000\n")
    client, process = aos(srv)
    last = ""
    for i in range(1, n + 1):
        last = send(srv, client, process, "x = 1", i)
    get(srv, f"/result/{last}?process-id={process}")
    base = rss(srv.proc.pid)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss(srv.proc.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    status, body = get(srv, f"/proof/{last}?process-id={process}&replay=1")
    took = time.perf_counter() - started
    stop.set()
    sampler.join()
    print(f"proof replay {n + 1} slots: status {status}, {len(body) / 1e6:.1f} MB, {took:.2f} s, "
          f"server RSS +{(peak[0] - base) / 1e6:.0f} MB")
    srv.stop()


def state() -> None:
    srv = start("state", "")
    client, process = aos(srv)
    get(srv, f"/result/{send(srv, client, process, 'x = 1', 1)}?process-id={process}")

    def files() -> dict[str, int]:
        return {str(f): f.stat().st_ino for f in (srv.data_dir / "checkpoints").rglob("*")
                if f.is_file()}

    get(srv, f"/state/{process}")
    writes = 0
    for _ in range(10):
        before = files()
        get(srv, f"/state/{process}")
        writes += sum(1 for k, v in files().items() if before.get(k) != v)
    print("state: checkpoint files written per /state request (10 requests):", writes / 10)
    srv.stop()


def waiters() -> None:
    srv = start("wait", "limits:\n  wall_clock_seconds: 20\nnode:\n  workers: 1\n"
                        "  result_wait_seconds: 600\n")
    client, process = aos(srv)
    send(srv, client, process, "while true do end", 1)
    queued = [send(srv, client, process, f"return {i}", i) for i in range(2, 18)]
    threads = [threading.Thread(target=get, args=(srv, f"/result/{m}?process-id={process}"))
               for m in queued]
    for thread in threads:
        thread.start()
    time.sleep(2)
    late = message(client, process, "return 'late'", 99)
    started = time.perf_counter()
    status, _ = srv.post("/", late.raw)
    print(f"waiters: POST / under 16 waiters answered {status} in "
          f"{time.perf_counter() - started:.2f} s")
    for thread in threads:
        thread.join()
    srv.stop()


def dryrun() -> None:
    srv = start("dry", "limits:\n  wall_clock_seconds: 20\nnode:\n  result_wait_seconds: 600\n")
    client, process = aos(srv)
    get(srv, f"/result/{send(srv, client, process, 'x = 1', 1)}?process-id={process}")
    body = json.dumps({"Owner": client.address, "Tags": [{"name": "Action", "value": "Eval"}],
                       "Data": "while true do end"}).encode()
    long = threading.Thread(target=srv.post, args=(f"/dry-run?process-id={process}", body,
                                                   "application/json"))
    long.start()
    time.sleep(2)
    started = time.perf_counter()
    get(srv, f"/result/{send(srv, client, process, 'return 42', 2)}?process-id={process}")
    print(f"dry-run: a scheduled message's result during a long dry-run came after "
          f"{time.perf_counter() - started:.2f} s")
    long.join()
    srv.stop()


def dribble(n: int = 200, hold: float = 15.0) -> None:
    srv = start("drib", "")
    host, port = srv.url[7:].rsplit(":", 1)
    socks = []
    for _ in range(n):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    end = time.time() + hold
    closed: set[int] = set()
    while time.time() < end:
        for i, sock in enumerate(socks):
            if i in closed:
                continue
            if select.select([sock], [], [], 0)[0]:
                with contextlib.suppress(OSError):
                    sock.recv(65536)
                closed.add(i)
                continue
            try:
                sock.sendall(b"X")
            except OSError:
                closed.add(i)
        time.sleep(0.5)
    print(f"dribble: {n} dribbling connections, still held after {hold:.0f} s: "
          f"{n - len(closed)}")
    for sock in socks:
        sock.close()
    srv.stop()


for section in WHAT:
    globals()[section]()
