"""Three real ``serve`` processes on loopback, one AO computer (issue 14's proof).

A token process lives on A, a sender on B and a recipient on C; the aos module is uploaded to A
only, and every client call goes to a node that does not host its process, on purpose. Bursts of
Transfers from B's process move balances on A exactly once, and each Debit-Notice (back to B) and
Credit-Notice (on to C) arrives exactly once, also when B is killed with SIGKILL right after it
acknowledged a burst and is then restarted on the same data directory.
"""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from tests.integration.clients import client_identity, message, module_item
from tests.integration.peering import command, free_port, health, poll, start_pair
from tests.integration.server import Server, start_server

BURST = 8
FLAGS = ("--allow-emulated-peers",)

TOKEN = """
Balances = Balances or {}
Handlers.add("transfer", "Transfer", function(m)
  local q = tonumber(m.Quantity)
  if (Balances[m.From] or 0) < q then
    Send({Target = m.From, Action = "Transfer-Error", ["X-Ref"] = m["X-Ref"]})
    return
  end
  Balances[m.From] = Balances[m.From] - q
  Balances[m.Recipient] = (Balances[m.Recipient] or 0) + q
  Send({Target = m.From, Action = "Debit-Notice", Recipient = m.Recipient,
        Quantity = m.Quantity, ["X-Ref"] = m["X-Ref"]})
  Send({Target = m.Recipient, Action = "Credit-Notice", Sender = m.From,
        Quantity = m.Quantity, ["X-Ref"] = m["X-Ref"]})
end)
"""

SENDER = """
Debits = Debits or {}
Handlers.add("go", "Go", function(m)
  Send({Target = TOKEN, Action = "Transfer", Recipient = RECIPIENT, Quantity = "1",
        ["X-Ref"] = m["X-Ref"]})
end)
Handlers.add("debit", "Debit-Notice", function(m) table.insert(Debits, m["X-Ref"]) end)
"""

RECIPIENT = """
Credits = Credits or {}
Handlers.add("credit", "Credit-Notice", function(m) table.insert(Credits, m["X-Ref"]) end)
"""










def _knows_all(srv: Server, others: list[Server]) -> Callable[[], bool]:
    def check() -> bool:
        seen = {p["address"] for p in health(srv.url)["peers"] if p["reachable"]}
        return all(o.address in seen for o in others)
    return check


def _post(srv: Server, item: items.Item) -> dict[str, Any]:
    status, body = srv.post("/", item.raw)
    assert status in (200, 202), (status, body)
    assert body["id"] == item.id, body
    return dict(body)


def _process(client: NodeIdentity, module: str, scheduler: Server, name: str,
             authorities: list[str]) -> items.Item:
    return items.sign(client, data=b"1984", anchor=name.encode().ljust(32, b"-")[:32], tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
        ("Module", module), ("Scheduler", scheduler.address), ("Name", name),
        *(("Authority", a) for a in authorities)])


def _go(client: NodeIdentity, process: str, ref: str, n: int) -> items.Item:
    return items.sign(client, target=process, data=b"", anchor=f"go{n:030d}".encode(), tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"),
        ("Action", "Go"), ("X-Ref", ref)])


def _dry_eval(srv: Server, process: str, owner: str, code: str) -> Any:
    body = json.dumps({"Owner": owner, "Tags": [{"name": "Action", "value": "Eval"}],
                       "Data": code}).encode()
    status, answer = srv.post(f"/dry-run?process-id={process}", body, "application/json")
    assert status == 200, answer
    output = answer.get("Output") or {}
    return output.get("data") if isinstance(output, dict) else output


def _listed(srv: Server, process: str, owner: str, table: str) -> list[str]:
    text = _dry_eval(srv, process, owner, f"return require('json').encode({table})")
    try:
        value = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    return list(value) if isinstance(value, list) else []


def test_transfers_across_three_nodes_happen_exactly_once_through_a_kill(
        tmp_path: Path, servers: list[Server]) -> None:
    ports = {name: free_port() for name in "abc"}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def start(name: str) -> Server:
        peers = [urls[o] for o in "abc" if o != name]
        srv = start_server(tmp_path / name, command(ports[name], *peers, flags=FLAGS))
        servers.append(srv)
        return srv

    a, b, c = start("a"), start("b"), start("c")
    for srv, others in ((a, [b, c]), (b, [a, c]), (c, [a, b])):
        poll(f"{srv.url} to learn its peers", _knows_all(srv, others))
    nodes = [a.address, b.address, c.address]

    client = client_identity(tmp_path / "client")
    module = module_item(client)
    assert a.post("/", module.raw)[0] == 200  # the module lives on A only
    token = _process(client, module.id, a, "token", nodes)
    sender = _process(client, module.id, b, "sender", nodes)
    recipient = _process(client, module.id, c, "recipient", nodes)
    _post(c, token)  # every item goes to a node that does not schedule it
    _post(a, sender)
    _post(b, recipient)

    setup = [(b, token.id, TOKEN + f"\nBalances['{sender.id}'] = 1000\nreturn 'ok'"),
             (c, sender.id, f"TOKEN = '{token.id}'\nRECIPIENT = '{recipient.id}'\n" + SENDER
              + "\nreturn 'ok'"),
             (a, recipient.id, RECIPIENT + "\nreturn 'ok'")]
    for n, (via, process, code) in enumerate(setup):
        _post(via, message(client, process, code, 100 + n))

    def burst(start_at: int, via: Server) -> list[str]:
        refs = [f"t{k}" for k in range(start_at, start_at + BURST)]
        for k, ref in enumerate(refs):
            _post(via, _go(client, sender.id, ref, start_at + k))
        return refs

    def settled(expect: list[str]) -> Callable[[], bool]:
        def check() -> bool:
            debited = _listed(b, sender.id, client.address, "Debits")
            credited = _listed(c, recipient.id, client.address, "Credits")
            return sorted(debited) == sorted(expect) and sorted(credited) == sorted(expect)
        return check

    refs = burst(0, a)
    poll("the first burst to settle", settled(refs))

    refs += burst(BURST, c)  # acknowledged by B (through C), then B dies at once
    b.kill()
    b.proc.wait(timeout=60)
    servers.remove(b)
    b = start("b")
    poll("the second burst to settle after B's restart", settled(refs))

    time.sleep(2.0)  # anything delivered twice would show up now
    debited = _listed(b, sender.id, client.address, "Debits")
    credited = _listed(c, recipient.id, client.address, "Credits")
    assert sorted(debited) == sorted(refs) and len(set(debited)) == len(debited)
    assert sorted(credited) == sorted(refs) and len(set(credited)) == len(credited)
    balances = json.loads(_dry_eval(a, token.id, client.address,
                                    "return require('json').encode(Balances)"))
    assert balances == {sender.id: 1000 - len(refs), recipient.id: len(refs)}


def test_a_push_to_a_node_that_does_not_trust_the_sender_stays_visible_as_failed(
        tmp_path: Path, servers: list[Server]) -> None:
    port_a, port_d = free_port(), free_port()
    url_a, url_d = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_d}"
    a = start_server(tmp_path / "a", command(port_a, url_d, flags=FLAGS))
    servers.append(a)
    d = start_server(tmp_path / "d", command(port_d, url_a))  # no policy, no flag: trusts no one
    servers.append(d)
    poll("a and d to learn each other", lambda: _knows_all(a, [d])() and _knows_all(d, [a])())

    client = client_identity(tmp_path / "client")
    module = module_item(client)
    assert a.post("/", module.raw)[0] == 200
    sender = _process(client, module.id, a, "sender", [a.address, d.address])
    target = _process(client, module.id, d, "target", [a.address, d.address])
    _post(a, sender)
    _post(a, target)  # forwarded to D, which fetches the module from A
    hi = message(client, sender.id, f"Send({{Target = '{target.id}', Action = 'Hi'}})\n"
                 "return 'sent'", 1)
    _post(d, hi)

    def failed() -> Any:
        return [u for u in health(a.url)["outbox"]["undelivered"]
                if u["target"] == target.id and u["status"] == "failed"]
    [refused] = poll("a's push to be refused by d", failed)
    assert "peer_policy" in refused["reason"], refused
    time.sleep(1.0)  # a refusal is final: not retried, still visible
    assert failed() == [refused]
    his = _dry_eval(d, target.id, client.address, "local n = 0 for _, m in ipairs(Inbox) do "
                    "if m.Action == 'Hi' then n = n + 1 end end return tostring(n)")
    assert his == "0"


def test_an_outbox_assignment_reaches_a_process_on_another_node_once(
        tmp_path: Path, servers: list[Server]) -> None:
    a, b = start_pair(tmp_path, servers, FLAGS)

    client = client_identity(tmp_path / "client")
    module = module_item(client)
    assert a.post("/", module.raw)[0] == 200
    nodes = [a.address, b.address]
    assigner = _process(client, module.id, a, "assigner", nodes)
    listener = _process(client, module.id, b, "listener", nodes)
    _post(a, assigner)
    _post(a, listener)
    _post(a, message(client, assigner.id, f"""
Handlers.add("note", "Note", function(m) Assign({{Processes = {{'{listener.id}'}},
                                                  Message = m.Id}}) end)
return 'ok'""", 1))
    _post(b, message(client, listener.id, """
ao.addAssignable("any", function(m) return true end)
Got = Got or {}
Handlers.add("note", "Note", function(m) table.insert(Got, m.Id) end)
return 'ok'""", 2))
    note = message(client, assigner.id, "a note", 3, action="Note")
    _post(b, note)  # to the wrong node: forwarded to A, whose process assigns it on to B's

    got = poll("the assignment on b", lambda: _listed(b, listener.id, client.address, "Got"))
    assert got == [note.id]
    delivered = [u for u in health(a.url)["outbox"]["undelivered"] if note.id in u["item"]]
    assert delivered == []  # nothing failed or left without a route
    status, again = b.post(f"/?process-id={listener.id}&assign={note.id}", note.raw)
    assert status == 202 and again["id"] == note.id, again  # a repeat keeps its one slot
    assert _listed(b, listener.id, client.address, "Got") == [note.id]


def test_a_spawn_of_a_module_only_a_peer_stores_fetches_it(
        tmp_path: Path, servers: list[Server]) -> None:
    a, b = start_pair(tmp_path, servers, FLAGS)

    client = client_identity(tmp_path / "client")
    module, only_b = module_item(client), module_item(client, compute="8000000000000")
    assert a.post("/", module.raw)[0] == 200
    assert b.post("/", only_b.raw)[0] == 200  # the child's module: stored on B only
    parent = _process(client, module.id, a, "parent", [a.address, b.address])
    _post(a, parent)
    _post(a, message(client, parent.id, f"""
Kids = Kids or {{}}
Handlers.add("spawned", "Spawned", function(m) table.insert(Kids, m.Process) end)
Spawn('{only_b.id}', {{Data = "1984", Tags = {{Name = "child"}}}})
return 'ok'""", 1))
    [child] = poll("the Spawned notice", lambda: _listed(a, parent.id, client.address, "Kids"))
    first = poll("the child's first result on a", lambda: _result(a, child))
    assert "Error" not in first or not first["Error"], first


def _result(srv: Server, process: str) -> Any:
    try:
        return srv.get_json(f"/result/{process}?process-id={process}")
    except urllib.error.HTTPError:
        return None
