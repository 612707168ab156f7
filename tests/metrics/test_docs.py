"""The operator guide and the Grafana dashboard name only metrics the node exports, document every
metric and every configuration option, and their alert rules pass ``promtool check rules``."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import HttpLimits, Listeners, NetworkSettings, TlsSettings
from appliance.metrics import NodeMetrics
from appliance.node.settings import NodeOptions
from tests.metrics.live import promtool, serve_with_metrics
from tests.support.paths import REPO

GUIDE = REPO / "docs" / "operator-guide.md"
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\b(?:ao_appliance|process|grpc_server)_[a-z0-9_]+")
EXTERNAL = {"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}
LIMIT_KEYS = ("memory", "fuel", "wall_clock_seconds", "max_response_bytes", "rollback_window")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                                                           "_created"),
            "gauge": ("",), "info": ("_info",)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Family name -> the sample names it exports, from a live node's registry."""
    with serve_with_metrics(tmp_path_factory.mktemp("docs"), workers=1) as live:
        yield _families(live.metrics)


def _families(metrics: NodeMetrics) -> dict[str, set[str]]:
    return {family.name: {family.name + s for s in SUFFIXES[family.type]}
            for family in metrics.registry.collect()}


def _samples(exported: dict[str, set[str]]) -> set[str]:
    return set().union(*exported.values())


def _rules_block() -> str:
    blocks = re.findall(r"```yaml\n(groups:\n.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(blocks) == 1
    return str(blocks[0])


def test_dashboard_names_only_exported_metrics(exported: dict[str, set[str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = _samples(exported)
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        used = set(METRIC.findall(expr))
        assert used, expr
        assert used <= names, (expr, used - names)
    shown = {name for expr in exprs for name in METRIC.findall(expr)}
    for family, samples in exported.items():
        if family.startswith("ao_appliance_"):
            assert samples & shown, f"{family} is not on the dashboard"


def test_guide_documents_every_metric(exported: dict[str, set[str]]) -> None:
    text = GUIDE.read_text()
    for family, samples in exported.items():
        name = next(iter(samples)) if len(samples) == 1 else f"{family}_total" \
            if f"{family}_total" in samples else family
        assert f"`{name}`" in text, name


def test_guide_metric_names_exist(exported: dict[str, set[str]]) -> None:
    names = _samples(exported) | set(exported)
    mentioned = {m for m in METRIC.findall(GUIDE.read_text()) if not m.startswith("grpc_")}
    assert mentioned - names == set()


def test_alert_rules_pass_promtool(exported: dict[str, set[str]], tmp_path: Path) -> None:
    rules = _rules_block()
    assert set(METRIC.findall(rules)) <= _samples(exported)
    assert all(name in rules for name in EXTERNAL)
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout


def test_guide_documents_every_config_option() -> None:
    text = GUIDE.read_text()
    options = [f"listen.{f.name}" for f in dataclasses.fields(Listeners)]
    options += [f"tls.{f.name}" for f in dataclasses.fields(TlsSettings)]
    options += [f"node.{f.name}" for f in dataclasses.fields(NodeOptions)]
    options += [f"http.{f.name}" for f in dataclasses.fields(HttpLimits)]
    options += [f"network.{f.name}" for f in dataclasses.fields(NetworkSettings)]
    options += [f"limits.{name}" for name in LIMIT_KEYS] + ["tee", "log_level"]
    for option in options:
        assert f"| `{option}` |" in text, option
