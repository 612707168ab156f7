"""A live node's /metrics: counters move for good and bad traffic, labels stay id-free, and
promtool finds the exposition clean."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.web import AbstractRoute

from appliance import __version__
from appliance.ao import items
from appliance.api.http import make_app
from appliance.compute import ComputeLimits
from appliance.node.identity import NodeIdentity
from tests.metrics.live import (
    FORMAT,
    Live,
    dispatch_wasm,
    promtool_check,
    samples,
    scrape,
    serve_with_metrics,
    value,
)

MAX_ITEM = 64 * 1024
AO = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1")]
ID = re.compile(r"[A-Za-z0-9_-]{43}")


class World:
    """The live node plus the ids the test created (none may show up in a label)."""

    def __init__(self, live: Live, client: NodeIdentity) -> None:
        self.live, self.client = live, client
        self.ids: set[str] = {live.node.identity.address, live.node.attestation_id}
        self.n = 0

    def post(self, tags: list[tuple[str, str]], data: bytes = b"",
             target: str | None = None) -> tuple[int, dict[str, object]]:
        self.n += 1
        item = items.sign(self.client, tags=AO + tags, data=data, target=target,
                          anchor=f"{self.n:032d}".encode())
        self.ids.add(item.id)
        status, body = self.live.post_item(item)
        return status, body

    def spawn(self, module: str, name: str, compute_limit: str) -> str:
        status, body = self.post([("Type", "Process"), ("Module", module),
                                  ("Scheduler", self.live.node.identity.address),
                                  ("Name", name), ("Compute-Limit", compute_limit)], b"E")
        assert status == 202, body
        return str(body["processId"])

    def send(self, process: str, op: str) -> str:
        status, body = self.post([("Type", "Message"), ("Action", "Eval")], op.encode(), process)
        assert status == 202, body
        return str(body["id"])

    def result(self, process: str, message: str) -> dict[str, object]:
        status, body = self.live.request("GET", f"/result/{message}?process-id={process}")
        assert status == 200, body
        parsed: dict[str, object] = json.loads(body)
        return parsed


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("metrics")
    limits = ComputeLimits(wall_clock_seconds=1.0, max_response_bytes=1024 * 1024)
    with serve_with_metrics(base, workers=1, limits=limits, max_item_bytes=MAX_ITEM) as live:
        yield World(live, NodeIdentity.load_or_create(base / "client"))


def test_counters_move_for_good_and_bad_traffic(world: World) -> None:
    live = world.live
    before = samples(scrape(live.metrics_url)[1])
    assert value(before, "ao_appliance_attestations_total", kind="standing", outcome="ok") == 1
    wasm = dispatch_wasm(Path(live.node.settings.data_dir) / "probe")
    status, body = world.post([("Type", "Module"), ("Module-Format", FORMAT)], wasm)
    assert status == 200, body
    module = str(body["id"])
    gas = world.spawn(module, "gas", "20000000")
    slow = world.spawn(module, "slow", "9000000000000")
    sent = [(gas, world.send(gas, op)) for op in "EEFTH"] + [(slow, world.send(slow, "L"))]
    errors = [world.result(process, message).get("Error") for process, message in sent]
    assert errors[:2] == [None, None] and all(errors[2:]), errors

    not_ours = items.sign(world.client, tags=[*AO, ("Type", "Process"), ("Module", module),
                                              ("Scheduler", "someone-else")])
    rejected = [live.post_item(b"not a data item")[0],
                world.post([("Type", "Wallet")])[0],
                live.post_item(not_ours)[0],
                live.post_item(b"\0" * (MAX_ITEM + 1))[0]]
    assert rejected == [400, 400, 421, 413]
    assert live.request("GET", f"/state/{gas}")[0] == 200
    assert live.request("GET", "/attestation?nonce=bm9uY2U")[0] == 200
    assert live.request("GET", "/no/such/route")[0] == 404

    content_type, text = scrape(live.metrics_url)
    assert content_type.startswith("text/plain; version=0.0.4")
    after = samples(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ao_appliance_items_accepted_total", type="Module") == 1
    assert delta("ao_appliance_items_accepted_total", type="Process") == 2
    assert delta("ao_appliance_items_accepted_total", type="Message") == len(sent)
    assert delta("ao_appliance_items_rejected_total", reason="BadRequest") == 2
    assert delta("ao_appliance_items_rejected_total", reason="NotHosted") == 1
    assert delta("ao_appliance_items_rejected_total", reason="TooLarge") == 1
    # each Process item (slot 0) too; a Compute-Limit binds only metered modules (AO's gas), so
    # this plain module has no out-of-gas outcome here (tests/compute/test_metering.py has it)
    outcomes = {"ok": 2 + 2, "error": 1, "trap": 1, "response_too_large": 1, "out_of_gas": 0,
                "wall_clock": 1}
    for outcome, count in outcomes.items():
        assert delta("ao_appliance_evaluations_total", outcome=outcome) == count, outcome
    assert delta("ao_appliance_results_signed_total") == sum(outcomes.values())
    assert delta("ao_appliance_evaluation_batch_duration_seconds_count") >= 2
    assert delta("ao_appliance_evaluation_batch_duration_seconds_sum") >= 0.5  # the slow loop
    assert delta("ao_appliance_checkpoints_total", outcome="ok") == 1
    assert delta("ao_appliance_checkpoint_duration_seconds_count") == 1
    assert delta("ao_appliance_checkpoint_raw_bytes_total") >= 2 * 65536
    assert 0 < delta("ao_appliance_checkpoint_file_bytes_total") \
        < delta("ao_appliance_checkpoint_raw_bytes_total")
    assert delta("ao_appliance_attestations_total", kind="fresh", outcome="ok") == 1
    assert 0 <= value(after, "ao_appliance_attestation_age_seconds") < 60
    assert value(after, "ao_appliance_processes") == 2
    assert value(after, "ao_appliance_schedule_backlog") == 0
    assert value(after, "ao_appliance_outbox_pending") == 0
    assert value(after, "ao_appliance_processes_broken") == 0
    build = [dict(labels) for name, labels in after if name == "ao_appliance_build_info"]
    assert len(build) == 1 and build[0]["version"] == __version__
    assert set(build[0]) == {"version", "python", "wasmtime"}
    assert value(after, "ao_appliance_build_info", **build[0]) == 1

    requests = "ao_appliance_http_requests_total"
    assert delta(requests, route="/", method="POST", code="202") == 2 + len(sent)
    assert delta(requests, route="/", method="POST", code="200") == 1
    assert delta(requests, route="/", method="POST", code="400") == 2
    assert delta(requests, route="/", method="POST", code="421") == 1
    assert delta(requests, route="/", method="POST", code="413") == 1
    assert delta(requests, route="/result/{message}", method="GET", code="200") == len(sent)
    assert delta(requests, route="/state/{process}", method="GET", code="200") == 1
    assert delta(requests, route="unmatched", method="GET", code="404") == 1
    assert delta("ao_appliance_http_request_duration_seconds_count", route="/result/{message}",
                 method="GET") == len(sent)

    routes = {r.resource.canonical for r in _routes(live) if r.resource} | {"unmatched"}
    for (name, labels), _ in after.items():
        for label, text_value in labels:
            assert text_value not in world.ids and not ID.fullmatch(text_value), (name, label)
            if label == "route":
                assert text_value in routes, text_value


def test_exposition_is_promtool_clean(world: World) -> None:
    world.live.request("GET", "/")
    result = promtool_check(scrape(world.live.metrics_url)[1])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_openmetrics_on_request(world: World) -> None:
    req = urllib.request.Request(world.live.metrics_url,
                                 headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.read().rstrip().endswith(b"# EOF")


def _routes(live: Live) -> list[AbstractRoute]:
    return [r for r in make_app(live.node).router.routes() if r.resource is not None]
