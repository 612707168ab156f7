"""``serve --metrics 127.0.0.1:0`` end to end: the listening line names the metrics address, and
its /metrics shows the standing attestation and the HTTP requests served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.core import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from appliance.metrics import ProcessMetrics
from tests.metrics.live import promtool_check, samples, scrape, value
from tests.support.paths import REPO


def _serve(tmp_path: Path, config: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """A real ``serve`` with HTTP and metrics on free loopback ports, and its listening event."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--data-dir", str(tmp_path / "data"),
         "--config", str(config), "--tee", "emulated", "--http", "127.0.0.1:0",
         "--metrics", "127.0.0.1:0"],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    return proc, next(json.loads(line) for line in proc.stdout if '"listening"' in line)


def test_serve_exposes_metrics(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("node:\n  workers: 1\n")
    proc, event = _serve(tmp_path, config)
    try:
        with urllib.request.urlopen(f"http://{event['http']}/", timeout=30) as resp:
            assert resp.status == 200
        content_type, text = scrape(f"http://{event['metrics']}/metrics")
        assert content_type.startswith("text/plain")
        data = samples(text)
        assert value(data, "ao_appliance_attestations_total", kind="standing",
                     outcome="ok") == 1
        assert value(data, "ao_appliance_http_requests_total", route="/", method="GET",
                     code="200") == 1
        assert value(data, "process_resident_memory_bytes") > 0
        check = promtool_check(text)
        assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_serve_refreshes_and_exports_its_standing_attestation(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("node:\n  workers: 1\n  attestation_refresh_seconds: 1\n")
    proc, event = _serve(tmp_path, config)
    try:
        url = f"http://{event['metrics']}/metrics"
        deadline = time.monotonic() + 120  # hang guard only: refreshes come every second
        text = scrape(url)[1]
        data = samples(text)
        while value(data, "ao_appliance_attestations_total", kind="standing",
                    outcome="ok") < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            text = scrape(url)[1]
            data = samples(text)
        made = value(data, "ao_appliance_attestations_total", kind="standing", outcome="ok")
        assert made >= 3
        assert value(data, "ao_appliance_evidence_verifications_total", whose="self",
                     step="EMU-16", outcome="ok") >= made - 1  # the newest may be in flight
        assert value(data, "ao_appliance_standing_attestation_info", platform="emulated",
                     tcb_status="unknown", step="EMU-16", outcome="ok") == 1
        assert value(data, "ao_appliance_attestation_refresh_interval_seconds") == 1
        # the emulated chain is valid for ten years from its creation
        left = value(data, "ao_appliance_standing_attestation_expiry_seconds",
                     expiring="ao-appliance VCEK EMULATED — NOT A TEE")
        assert 9 * 365 * 86400 < left <= 3650 * 86400
        assert value(data, "ao_appliance_standing_attestation_tcb_svn", tcb="committed",
                     component="snp") == 0
        check = promtool_check(text)
        assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_sighup_refreshes_the_standing_attestation(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--data-dir", str(tmp_path / "data"),
         "--tee", "emulated", "--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        event = next(json.loads(line) for line in proc.stdout if '"listening"' in line)
        url = f"http://{event['metrics']}/metrics"

        def standing() -> float:
            return value(samples(scrape(url)[1]), "ao_appliance_attestations_total",
                         kind="standing", outcome="ok")

        assert standing() == 1
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60  # hang guard only
        while standing() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert standing() == 2 and proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_process_metrics_agree_with_prometheus_client() -> None:
    ours = {m.name: m.samples[0].value for m in ProcessMetrics().collect()}
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    theirs = {m.name: m.samples[0].value for m in registry.collect()}
    assert set(theirs) <= set(ours)
    assert abs(ours["process_start_time_seconds"] - theirs["process_start_time_seconds"]) < 2
    assert 0 < ours["process_start_time_seconds"] <= time.time()
    assert ours["process_open_fds"] > 0
