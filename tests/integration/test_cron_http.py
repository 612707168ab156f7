"""Cron over a real ``ao-appliance serve``: the CU's ``/cron`` shape and paging, the MU's
``/monitor``, and the gateway bits the CU asks for cron processes (``blocks``, ``GET /`` height)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from appliance.ao import items
from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import start_server

# The query the CU's loadBlocksMeta sends (servers/cu/src/effects/ao-block.js), byte for byte
# in its operation: blocks from a height, ascending, a page at a time.
GET_BLOCKS = """
      query GetBlocks($min: Int!, $limit: Int!) {
        blocks(
          height: { min: $min },
          first: $limit,
          sort: HEIGHT_ASC
        ) {
          pageInfo {
            hasNextPage
          }
          edges {
            node {
              timestamp
              height
            }
          }
        }
      }
    """
HANDLER = ('Handlers.add("cron", Handlers.utils.hasMatchingTag("Action", "Cron"), '
           'function(msg) ticks = (ticks or 0) + 1; print("tick " .. ticks); '
           'Send({Target = Peer, Action = "Tock", Data = tostring(ticks)}) end); return "armed"')


def _cursor(value: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(value))
    return decoded


def test_cron_route_monitor_blocks_and_height(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "node")
    try:
        client = client_identity(tmp_path / "client")
        module = upload_module(srv, client)
        proc = items.sign(client, data=b"1984", anchor=b"cron".ljust(32, b"-"), tags=[
            ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
            ("Module", module), ("Scheduler", srv.address), ("Authority", srv.address),
            ("Cron-Interval", "1-second"), ("Cron-Tag-Action", "Cron")])
        assert srv.post("/", proc.raw)[0] == 202
        peer = spawn(srv, client, module, "peer")
        arm = message(client, proc.id, f'Peer = "{peer}"; ' + HANDLER, 1)
        assert srv.post("/", arm.raw)[0] == 202
        assert "armed" in json.dumps(srv.get_json(f"/result/{arm.id}?process-id={proc.id}"))
        deadline = time.monotonic() + 120  # hang guard only: the node's monitor ticks
        while True:
            page = srv.get_json(f"/cron/{proc.id}")
            if len(page["edges"]) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        edges = page["edges"]
        assert 4 <= len(edges) < 500 and page["pageInfo"]["hasNextPage"] is False
        node = edges[0]["node"]
        assert set(node) >= {"Messages", "Assignments", "Spawns", "Output"}
        assert "tick 1" in json.dumps(node["Output"])
        assert node["Messages"][0]["Tags"]
        first = _cursor(edges[0]["cursor"])
        assert list(first) == ["timestamp", "ordinate", "cron", "sort"]
        assert first["cron"] == "0-1-second" and first["sort"] == "ASC"
        assert first["ordinate"] == "1" and isinstance(first["timestamp"], int)
        # paging: limit, from = a cursor (exclusive), to = a cursor (inclusive)
        one = srv.get_json(f"/cron/{proc.id}?limit=1")
        assert one["pageInfo"]["hasNextPage"] is True and one["edges"] == edges[:1]
        nxt = srv.get_json(f"/cron/{proc.id}?limit=2&from={one['edges'][0]['cursor']}")
        assert nxt["edges"] == edges[1:3]
        upto = srv.get_json(f"/cron/{proc.id}?to={edges[2]['cursor']}")
        assert upto["edges"] == edges[:3]
        since = srv.get_json(f"/cron/{proc.id}?from={first['timestamp']}&limit=1")
        assert since["edges"] == edges[:1]  # a bare timestamp includes its own millisecond
        # the cron outbox was pushed: the Tock messages are scheduled on the peer
        schedule = srv.get_json(f"/{peer}?limit=100")
        tocks = [e for e in schedule["edges"] if any(
            t["name"] == "Action" and t["value"] == "Tock" for t in e["node"]["message"]["tags"])]
        assert tocks
        # MU monitor route (aos .monitor), gateway height and blocks
        request = urllib.request.Request(f"{srv.url}/monitor/{proc.id}", data=b"",
                                         method="POST")
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200 and resp.read() == b"Monitoring process"
        health = srv.get_json("/")
        assert health["height"] == 0
        status, blocks = srv.post("/graphql", json.dumps(
            {"query": GET_BLOCKS, "variables": {"min": 0, "limit": 100}}).encode(),
            "application/json")
        assert status == 200 and "errors" not in blocks, blocks
        nodes = [e["node"] for e in blocks["data"]["blocks"]["edges"]]
        assert [n["height"] for n in nodes] == [0]
        origin = srv.get_json(f"/processes/{proc.id}")["timestamp"]
        assert nodes[0]["timestamp"] <= int(origin) // 1000
    finally:
        srv.stop()
