"""The operator's limits are caps (a real ``serve`` on loopback): ``Memory-Limit`` /
``Compute-Limit`` tags may lower them; a module or process asking for more is refused with a 422
naming the limit and the maximum; a message that hits a limit gets an Error saying which."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.compute.limits import ComputeLimits
from tests.integration.clients import (
    client_identity,
    message,
    module_item,
    process_item,
)
from tests.integration.server import SERVE, Server, start_server

MAX_MEMORY = 512 * 1024**2
MAX_FUEL = 10_000_000_000  # the operator's safety limit, for every module
MAX_GAS = ComputeLimits.gas  # AO gas: what Compute-Limit asks for (it binds metered modules)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    base = tmp_path_factory.mktemp("caps")
    config = base / "config.yaml"
    config.write_text(f"limits:\n  memory: {MAX_MEMORY}\n  fuel: {MAX_FUEL}\n")
    server = start_server(base / "node", (*SERVE[:-1], "--config", str(config), SERVE[-1]))
    try:
        yield server, base
    finally:
        server.stop()


def _result(server: Server, process: str, mid: str) -> dict[str, object]:
    return json.loads(server.get(f"/result/{mid}?process-id={process}"))  # type: ignore[no-any-return]


def test_a_module_asking_for_more_memory_is_refused(capped: tuple[Server, Path]) -> None:
    server, base = capped
    client = client_identity(base / "client")
    status, body = server.post("/", module_item(client, memory="1-gib").raw)
    assert status == 422, body
    assert "Memory-Limit" in body["error"] and str(MAX_MEMORY) in body["error"]
    greedy = module_item(client, memory="256-mb", compute=str(MAX_GAS + 1))
    status, body = server.post("/", greedy.raw)
    assert status == 422, body
    assert "Compute-Limit" in body["error"] and str(MAX_GAS) in body["error"]


def test_a_process_asking_for_more_is_refused(capped: tuple[Server, Path]) -> None:
    server, base = capped
    client = client_identity(base / "client")
    module = module_item(client, memory="256-mb")
    assert server.post("/", module.raw)[0] == 200
    item = process_item(server, client, module.id, "greedy", (("Memory-Limit", "2-gb"),))
    status, body = server.post("/", item.raw)
    assert status == 422, body
    assert "Memory-Limit 2000000000 exceeds this node's maximum of 536870912" in body["error"]
    status, body = server.post("/", process_item(server, client, module.id, "bad",
                                                 (("Compute-Limit", "lots"),)).raw)
    assert status == 400, body


def test_tags_lower_the_limits_and_errors_name_them(capped: tuple[Server, Path]) -> None:
    server, base = capped
    client = client_identity(base / "client")
    module = module_item(client, memory="256-mb")
    assert server.post("/", module.raw)[0] == 200
    frugal = process_item(server, client, module.id, "frugal", (("Compute-Limit", "2000000000"),))
    # a plain-format module: Compute-Limit (AO gas) does not bind it, the operator's fuel does
    small = process_item(server, client, module.id, "small", (("Memory-Limit", "200-mb"),))
    loop = message(client, frugal.id, "while true do end", 0)
    fine = message(client, frugal.id, "return 1 + 1", 1)
    hog = message(client, small.id, "t = {} for i = 1, 1e3 do t[i] = ('x'):rep(1e7) .. i end", 2)
    for sent in (frugal, small, loop, fine, hog):
        assert server.post("/", sent.raw)[0] == 202
    assert _result(server, frugal.id, loop.id)["Error"] == \
        f"compute limit exceeded (out of gas: {MAX_FUEL} fuel)"
    assert not _result(server, frugal.id, fine.id).get("Error")
    error = _result(server, small.id, hog.id)["Error"]
    assert isinstance(error, str) and error.startswith(
        f"memory limit exceeded ({200 * 1000**2} bytes)"), error
