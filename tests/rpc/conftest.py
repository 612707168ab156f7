"""One node and operator server for the whole directory: mTLS on loopback plus a unix socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from appliance.node.identity import NodeIdentity
from appliance.rpc.gen import operator_pb2 as pb
from tests.rpc.support import (
    Live,
    Pki,
    make_node,
    make_pki,
    module_item,
    process_item,
    serving,
    tls_config,
)

MAX_ITEM = 4 * 1024 * 1024
ALLOWED = ("operator-1", "spiffe://ao.example/robot")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("rpc")
    node = make_node(base, max_item_bytes=MAX_ITEM, checkpoint_every_messages=1000)
    registry = CollectorRegistry()
    unix = base / "run" / "operator.sock"
    try:
        with serving(node, tls_config(pki, unix, ALLOWED), registry) as (loop, handle):
            client = NodeIdentity.load_or_create(base / "client")
            stub = Live(node, handle, loop, registry, pki, handle.addresses[0], unix, client,
                        "", "").local()
            module = module_item(client)
            stub.AddModule(pb.SubmitItemRequest(item=module.raw), timeout=60)
            process = process_item(client, module.id, node.identity.address, "rpc")
            stub.Spawn(pb.SubmitItemRequest(item=process.raw), timeout=60)
            yield Live(node, handle, loop, registry, pki, handle.addresses[0], unix, client,
                       module.id, process.id)
    finally:
        node.close()
