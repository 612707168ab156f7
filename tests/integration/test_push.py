"""Cross-node push (issue 14 step 3) between two real ``serve`` processes peered on loopback: a
process on A sends to a process on B and B's reply comes back to A, bursts arrive exactly once
and in order, also when A is killed (-9) right after acknowledging a burst and when B is killed
while A pushes one; Spawns get their
``Action: Spawned`` notice locally and across nodes; a peer's 4xx refusal ends ``failed`` with its
reason and a wallet target ``pending-remote``, neither retried."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.node.identity import NodeIdentity
from tests.integration.clients import (
    client_identity,
    message,
    process_item,
    spread_names,
    upload_module,
)
from tests.integration.peering import command, free_port, health, poll, start_pair
from tests.integration.server import Server, start_server
from tests.metrics.live import samples, scrape, value

FLAGS = ("--metrics", "127.0.0.1:0", "--allow-emulated-peers")
BURST = 20

PONG_SETUP = """Pongs = Pongs or {}
Kids = Kids or {}
Handlers.add("pong", "Pong", function(m) table.insert(Pongs, m.From .. "/" .. m.Data) end)
Handlers.add("spawned", "Spawned", function(m)
  table.insert(Kids, m.Process .. "/" .. m.From .. "/" .. tostring(m.Reference)) end)
return "ok"
"""
PING_SETUP = """Pings = Pings or {}
Handlers.add("ping", "Ping", function(m)
  table.insert(Pings, m.Data)
  Send({Target = m.From, Action = "Pong", Data = m.Data})
end)
return "ok"
"""










def _peered(srv: Server, address: str) -> Callable[[], Any]:
    return lambda: [p for p in health(srv.url)["peers"] if p["address"] == address
                    and p["reachable"]]


def _eval(srv: Server, client: NodeIdentity, process: str, code: str, n: int) -> str:
    item = message(client, process, code, n)
    status, body = srv.post("/", item.raw)
    assert status == 202, body
    return item.id


def _result(srv: Server, process: str, message_id: str) -> Any:
    return json.loads(srv.get(f"/result/{message_id}?process-id={process}"))


def _value(srv: Server, client: NodeIdentity, process: str, expression: str) -> str:
    body = json.dumps({"Owner": client.address, "Tags": [{"name": "Action", "value": "Eval"}],
                       "Data": f"return {expression}"}).encode()
    status, out = srv.post(f"/dry-run?process-id={process}", body, "application/json")
    assert status == 200, out
    output = out["Output"]
    return str(output.get("data") if isinstance(output, dict) else output)


def _list(srv: Server, client: NodeIdentity, process: str, name: str) -> list[str]:
    text = _value(srv, client, process, f'table.concat({name}, ",")')
    return [v for v in text.split(",") if v]


def test_push_between_two_nodes_exactly_once_in_order_and_through_a_kill(
        tmp_path: Path, servers: list[Server]) -> None:
    a, b = start_pair(tmp_path, servers, FLAGS)
    port_a, port_b = int(a.url.rsplit(":", 1)[1]), int(b.url.rsplit(":", 1)[1])
    url_a, url_b = a.url, b.url

    client = client_identity(tmp_path / "client")
    module = upload_module(a, client)
    assert upload_module(b, client) == module
    both = (("Authority", a.address), ("Authority", b.address))
    sender = process_item(a, client, module, "sender", both)
    receiver = process_item(b, client, module, "receiver", both)
    for srv, item in ((a, sender), (b, receiver)):
        status, body = srv.post("/", item.raw)
        assert status == 202, body
    n = 0

    def run(srv: Server, process: str, code: str) -> Any:
        nonlocal n
        n += 1
        return _result(srv, process, _eval(srv, client, process, code, n))

    assert "ok" in json.dumps(run(a, sender.id, PONG_SETUP)["Output"])
    assert "ok" in json.dumps(run(b, receiver.id, PING_SETUP)["Output"])

    # A burst from A to B; every Ping's Pong comes back to A, each exactly once and in order.
    first = [f"a{i}" for i in range(BURST)]
    sends = "\n".join(f'Send({{Target = "{receiver.id}", Action = "Ping", Data = "{v}"}})'
                      for v in first)
    run(a, sender.id, sends + f'\nSend({{Target = "{client.address}", Action = "Hi"}})')
    pongs = poll("the pongs of the first burst",
                  lambda: (got := _list(a, client, sender.id, "Pongs")) and len(got) >= BURST
                  and got)
    assert pongs == [f"{receiver.id}/{v}" for v in first]
    assert _list(b, client, receiver.id, "Pings") == first

    # A wallet target ends pending-remote (final), with its reason.
    seen = poll("the wallet push to settle", lambda: (h := health(a.url)) and any(
        u["target"] == client.address for u in h["outbox"]["undelivered"]) and h)
    [wallet] = [u for u in seen["outbox"]["undelivered"] if u["target"] == client.address]
    assert wallet["status"] == "pending-remote" and client.address in wallet["reason"]
    assert seen["outbox"]["by_status"].get("delivered", 0) >= BURST
    assert health(b.url)["outbox"]["by_status"].get("delivered", 0) >= BURST

    # A second burst, then A is killed (-9) right after acknowledging it, and restarted.
    second = [f"b{i}" for i in range(BURST)]
    n += 1
    _eval(a, client, sender.id, "\n".join(
        f'Send({{Target = "{receiver.id}", Action = "Ping", Data = "{v}"}})' for v in second), n)
    a.kill()
    servers.remove(a)
    a = start_server(tmp_path / "a", command(port_a, url_b, flags=FLAGS))
    servers.append(a)
    pongs = poll("the pongs of the second burst",
                  lambda: (got := _list(a, client, sender.id, "Pongs"))
                  and len(got) >= 2 * BURST and got)
    assert pongs == [f"{receiver.id}/{v}" for v in first + second]
    pings = poll("the pings", lambda: (got := _list(b, client, receiver.id, "Pings"))
                  and len(got) >= 2 * BURST and got)
    assert pings == first + second

    # A third burst while B is killed (-9) and restarted: A retries until B is back.
    third = [f"c{i}" for i in range(BURST)]
    n += 1
    _eval(a, client, sender.id, "\n".join(
        f'Send({{Target = "{receiver.id}", Action = "Ping", Data = "{v}"}})' for v in third), n)
    b.kill()
    servers.remove(b)
    b = start_server(tmp_path / "b", command(port_b, url_a, flags=FLAGS))
    servers.append(b)
    pongs = poll("the pongs of the third burst",
                  lambda: (got := _list(a, client, sender.id, "Pongs"))
                  and len(got) >= 3 * BURST and got)
    assert pongs == [f"{receiver.id}/{v}" for v in first + second + third]
    assert _list(b, client, receiver.id, "Pings") == first + second + third

    # Spawns: one here, one on B (its Scheduler), one B refuses (422: asks above B's maximum).
    poll("a to learn b again", _peered(a, b.address))
    run(a, sender.id, "\n".join([
        f'Spawn("{module}", {{Data = "local", Name = "kid-a"}})',
        f'Spawn("{module}", {{Data = "remote", Name = "kid-b", Scheduler = "{b.address}"}})',
        f'Spawn("{module}", {{Data = "big", Name = "kid-x", Scheduler = "{b.address}", '
        '["Memory-Limit"] = "1048576-gb"})']))
    kids = poll("two Spawned notices", lambda: (got := _list(a, client, sender.id, "Kids"))
                 and len(got) >= 2 and got)
    assert len(kids) == 2, kids
    local_kid, remote_kid = (k.split("/") for k in kids)
    for kid in (local_kid, remote_kid):
        assert kid[0] == kid[1] and len(kid[0]) == 43, kids  # Process == From (child id)
    assert b.get_json(f"/processes/{remote_kid[0]}")["process_id"] == remote_kid[0]
    seen = poll("the refused spawn to fail", lambda: (h := health(a.url)) and any(
        u["status"] == "failed" for u in h["outbox"]["undelivered"]) and h)
    [failed] = [u for u in seen["outbox"]["undelivered"] if u["status"] == "failed"]
    assert "HTTP 422" in failed["reason"] and "Memory-Limit" in failed["reason"], failed
    assert seen["outbox"]["by_status"].get("pending", 0) == 0
    assert a.metrics_url is not None
    scraped = samples(scrape(a.metrics_url)[1])
    for status, count in seen["outbox"]["by_status"].items():
        assert value(scraped, "ao_appliance_outbox_items", status=status) == count, status
    assert value(scraped, "ao_appliance_outbox_items", status="failed") == 1


def test_push_from_shard_processes(tmp_path: Path, servers: list[Server]) -> None:
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    a = start_server(tmp_path / "a", (*command(port_a, url_b, flags=FLAGS)[:-1], "--shards", "2",
                                      "--data-dir"))
    servers.append(a)
    b = start_server(tmp_path / "b", command(port_b, url_a, flags=FLAGS))
    servers.append(b)
    assert len(a.shard_pids()) == 2
    poll("a to learn b", _peered(a, b.address))
    poll("b to learn a", _peered(b, a.address))
    client = client_identity(tmp_path / "client")
    module = upload_module(a, client)
    upload_module(b, client)
    both = (("Authority", a.address), ("Authority", b.address))
    senders = [process_item(a, client, module, name, both)
               for name in spread_names(a, client, module, 2, "sender", 2)]
    receiver = process_item(b, client, module, "receiver", both)
    for srv, item in ((a, senders[0]), (a, senders[1]), (b, receiver)):
        status, body = srv.post("/", item.raw)
        assert status == 202, body
    n = 0
    for srv, process, code in ((a, senders[0].id, PONG_SETUP), (a, senders[1].id, PONG_SETUP),
                               (b, receiver.id, PING_SETUP)):
        n += 1
        assert "ok" in json.dumps(_result(srv, process, _eval(srv, client, process, code, n)))
    for k, sender in enumerate(senders):
        n += 1
        _eval(a, client, sender.id, "\n".join(
            f'Send({{Target = "{receiver.id}", Action = "Ping", Data = "s{k}-{i}"}})'
            for i in range(5)), n)
    for k, sender in enumerate(senders):
        pongs = poll(f"the pongs of sender {k}",
                      lambda s=sender: (got := _list(a, client, s.id, "Pongs"))
                      and len(got) >= 5 and got)
        assert pongs == [f"{receiver.id}/s{k}-{i}" for i in range(5)]
    pings = _list(b, client, receiver.id, "Pings")
    assert sorted(pings) == sorted(f"s{k}-{i}" for k in range(2) for i in range(5))
