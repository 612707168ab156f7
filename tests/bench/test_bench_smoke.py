"""The benchmark suite runs end to end on tiny sizes (figures are not asserted: see bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO, node_modules, vectors_dir


def test_bench_quick_runs_and_writes_every_section(tmp_path: Path) -> None:
    node_modules()
    vectors_dir()
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    sections = {"engine", "aos", "http", "ceiling", "cold_start", "verification", "scaling",
                "shards", "xpush"}
    assert sections <= results.keys()
    latency = [row for row in results["engine"] if "eval_p50_ms" in row]
    metered = [row for row in results["engine"] if "engine_gas_msgs_s" in row]
    assert latency and all(row["eval_p50_ms"] > 0 and row["compile/cached"] > 0
                           for row in latency)
    assert len(metered) == 2 and all(row["engine_gas_msgs_s"] > 0 for row in metered)
    for row in results["aos"]:
        assert row["c_engine"] > 0 and row["d_pipeline_1"] > 0 and row["a_loader_legacy"] > 0
    assert all(row["http_msgs_per_s"] > 0 for row in results["http"] if "projection" not in row)
    assert [row["projection"] for row in results["http"] if "projection" in row] == [
        "front", "shards+workers", "node"]
    assert all(r["msgs_per_s"] > 0 for r in results["shards"]["two_shards"])
    assert results["verification"]["snp_reports_per_s"] > 0
    assert all(row["cross_node"] > 0 and row["within_node"] > 0 for row in results["xpush"])
    assert "== scaling" in proc.stdout
