"""A crank storm is stopped (a real ``serve``, a real aos handler that sends two messages to
itself per message): the schedule stops growing at the crank limit, each result whose outbox was
cut says so in its Error, and the refused messages are counted in metrics."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.clients import client_identity, message, spawn, upload_module
from tests.integration.server import SERVE, Server
from tests.integration.server import start_server as start
from tests.integration.test_aoconnect import whole_schedule

STORM = """Handlers.add("storm", "Storm", function(msg)
  ao.send({Target = ao.id, Action = "Storm"})
  ao.send({Target = ao.id, Action = "Storm"})
end)"""
LIMIT = 40


def _results(server: Server, process: str, edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(server.get(f"/result/{e['node']['message']['id']}?process-id={process}"))
            for e in edges]


def test_a_self_messaging_storm_stops_at_the_crank_limit(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"node:\n  max_crank_messages: {LIMIT}\n  crank_window_seconds: 3600\n")
    server = start(tmp_path / "node", (*SERVE[:-1], "--config", str(config), "--metrics",
                                       "127.0.0.1:0", SERVE[-1]))
    try:
        client = client_identity(tmp_path / "client")
        process = spawn(server, client, upload_module(server, client), "stormy")
        for n, (code, action) in enumerate([(STORM, "Eval"), ("", "Storm")]):
            assert server.post("/", message(client, process, code, n, action).raw)[0] == 202
        # 1 process + 2 client messages + LIMIT pushed ones, then every send is refused
        expected = 3 + LIMIT
        deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
        while len(edges := whole_schedule(server, process)) < expected:
            assert time.monotonic() < deadline, f"only {len(edges)} slots"
            time.sleep(0.1)
        results = _results(server, process, edges)  # waits for each evaluation
        assert len(whole_schedule(server, process)) == expected, "the storm went on"
        cut = [r for r in results if str(r.get("Error") or "").startswith("outbox limit exceeded")]
        assert cut, "a result whose outbox was cut says so"
        refused = sum(int(str(r["Error"]).split(": ")[1].split(" of ")[0]) for r in cut)
        assert refused == 2 * (expected - 2) - LIMIT  # every Storm message sends 2
        assert server.metrics_url is not None
        with urllib.request.urlopen(server.metrics_url, timeout=30) as resp:
            text = resp.read().decode()
        assert f'ao_appliance_outbox_refused_total{{reason="crank_window"}} {float(refused)}' \
            in text
    finally:
        server.stop()
