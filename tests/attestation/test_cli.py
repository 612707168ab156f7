"""`ao-appliance attestation report|verify` as a user runs them: exit codes and output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO, vectors_dir

NOW = "2025-01-01T00:00:00Z"
REPORT_DATA = "ab" * 64


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "attestation", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def milan(tmp_path: Path) -> tuple[Path, Path]:
    snp = vectors_dir() / "sev-snp"
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(snp / "vcek.testcer", certs / "vcek.der")
    shutil.copy(snp / "amd-roots" / "ask_ark_milan.pem", certs / "ask_ark.pem")
    return snp / "attestation.bin", certs


def test_emulated_round_trip_needs_the_flag(tmp_path: Path) -> None:
    bundle = tmp_path / "evidence.json"
    made = _cli("report", "--report-data", REPORT_DATA, "--tee", "emulated",
                "--data-dir", tmp_path / "data", "--out", bundle)
    assert made.returncode == 0, made.stderr
    refused = _cli("verify", bundle)
    assert refused.returncode == 1
    assert "EMU-0" in refused.stdout and "--allow-emulated" in refused.stdout
    assert "allow_emulated=True" not in refused.stdout and "DESIGN" not in refused.stdout
    accepted = _cli("verify", bundle, "--allow-emulated")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    first, *rest = accepted.stdout.splitlines()
    assert first.startswith("EMULATED EVIDENCE")
    assert f"report_data: {REPORT_DATA}" in rest
    as_json = json.loads(_cli("verify", bundle, "--allow-emulated", "--json").stdout)
    assert as_json["verified"] and as_json["emulated"] and as_json["report_data"] == REPORT_DATA


def test_real_milan_report_chain_verifies_but_debug_is_refused(milan: tuple[Path, Path]) -> None:
    report, certs = milan
    out = _cli("verify", report, "--certs", certs, "--now", NOW, "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    assert json.loads(out.stdout)["step"] == "SNP-10"  # go-sev-guest's test guest allows DEBUG


def test_real_milan_report_rejections_name_the_step(milan: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    report, certs = milan
    expired = _cli("verify", report, "--certs", certs, "--now", "2035-01-01T00:00:00Z")
    assert expired.returncode == 1 and expired.stdout.startswith("REJECTED at step SNP-")
    no_vcek = tmp_path / "roots-only"
    no_vcek.mkdir()
    shutil.copy(certs / "ask_ark.pem", no_vcek)
    assert _cli("verify", report, "--certs", no_vcek, "--now", NOW).returncode == 1
    flipped = tmp_path / "flipped.bin"
    data = bytearray(report.read_bytes())
    data[0x50] ^= 1
    flipped.write_bytes(bytes(data))
    out = _cli("verify", flipped, "--certs", certs, "--now", NOW, "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["step"].startswith("SNP-")
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(report.read_bytes()[:1000])
    out = _cli("verify", truncated, "--certs", certs, "--now", NOW, "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["step"] == "SNP-1"


@pytest.mark.parametrize("args", [
    ("report", "--report-data", "abc"),
    ("report", "--report-data", "ab" * 63),
    ("verify", "/nonexistent/evidence"),
    ("verify", "__REPORT__", "--certs", "/nonexistent"),
    ("verify", "__REPORT__", "--now", "yesterday"),
    ("bogus",),
])
def test_usage_errors_exit_2_without_traceback(args: tuple[str, ...],
                                               milan: tuple[Path, Path]) -> None:
    out = _cli(*(str(milan[0]) if a == "__REPORT__" else a for a in args))
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and out.stderr.strip()


def test_real_milan_report_verifies_under_a_debug_policy(milan: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    report, certs = milan
    measurement = json.loads(_cli("verify", report, "--certs", certs, "--now", NOW, "--json",
                                  "--policy", _policy(tmp_path, "any_measurement: true\n"
                                                      "snp: {allow_debug: true}\n")).stdout)
    assert measurement["verified"] and measurement["steps"][:2] == ["SNP-1", "SNP-2"]
    pinned = _policy(tmp_path, f"allowed_measurements: [{measurement['measurement']}]\n"
                               "snp: {allow_debug: true}\n")
    assert _cli("verify", report, "--certs", certs, "--now", NOW, "--policy",
                pinned).returncode == 0
    other = _policy(tmp_path, f"allowed_measurements: ['{'00' * 48}']\n"
                              "snp: {allow_debug: true}\n")
    out = _cli("verify", report, "--certs", certs, "--now", NOW, "--policy", other, "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["step"] == "SNP-15"
    bad = _policy(tmp_path, "allowed_measurements: []\nallow_emulated: true\n")
    out = _cli("verify", report, "--certs", certs, "--policy", bad)
    assert out.returncode == 2 and "policy.yaml:2:" in out.stderr


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path
