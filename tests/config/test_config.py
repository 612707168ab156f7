"""The node's YAML configuration: strict validation with file:line:col, and check-config's exit
codes (0 valid, 78 invalid) as systemd's ExecStartPre and RestartPreventExitStatus rely on."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli.serve_cmd import effective_config, register
from appliance.config import AppConfig, NetworkSettings, load_config, parse_config
from appliance.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
tee: emulated
listen:
  http: 127.0.0.1:8734
  metrics: 127.0.0.1:9464
  grpc: 127.0.0.1:50051
tls:
  plaintext_loopback: true
node:
  max_item_bytes: 8 MiB
  checkpoint_every_messages: 500
  checkpoint_every_seconds: 600
  memory_budget_bytes: 8 GiB
limits:
  memory: 1-gb
  fuel: 100000000000
  wall_clock_seconds: 30
log_level: warning
"""


def test_a_full_file_becomes_frozen_settings() -> None:
    config = parse_config(GOOD, "good.yaml")
    assert config.tee == "emulated"
    assert config.listen.metrics == ("127.0.0.1", 9464)
    assert config.node.max_item_bytes == 8 << 20
    assert config.node.memory_budget_bytes == 8 << 30
    assert config.limits.memory_bytes == 10**9  # AO sizes: gb is decimal, GiB binary
    assert config.log_level == "warning"
    with pytest.raises(AttributeError):
        config.tee = "tdx"  # type: ignore[misc]


def test_http_limits_section() -> None:
    config = parse_config("http:\n  max_connections: 10\n  attestation_rate: 0.5\n"
                          "node:\n  dry_run_wall_clock_seconds: 2.5\n", "http.yaml")
    assert config.http.max_connections == 10 and config.http.attestation_rate == 0.5
    assert config.http.header_timeout_seconds == 10.0
    assert config.node.dry_run_wall_clock_seconds == 2.5


def test_network_section() -> None:
    config = parse_config("network:\n  public_url: https://a.example.org/\n"
                          "  peers: [http://10.0.0.2:8734, 'https://[::1]:443/ao']\n"
                          "  refresh_seconds: 5\n", "net.yaml")
    assert config.network == NetworkSettings("https://a.example.org",
                                             ("http://10.0.0.2:8734", "https://[::1]:443/ao"), 5.0)
    assert parse_config("network: {public_url: null}\n", "n.yaml").network == NetworkSettings()
    with pytest.raises(ConfigError, match="each once"):
        NetworkSettings(peers=("http://a:1", "http://a:1"))
    waits = parse_config("network: {forward_wait_seconds: 2.5}\n", "w.yaml")
    assert waits.network.forward_wait_seconds == 2.5
    with pytest.raises(ConfigError, match="forward_wait_seconds"):
        parse_config("network: {forward_wait_seconds: 0.1}\n", "w.yaml")


def _serve_args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["serve", "--data-dir", "/nonexistent", *flags])


def test_serve_flags_set_the_network(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("network:\n  peers: [http://file:1]\n  public_url: http://file:2\n")
    config = effective_config(_serve_args("--config", str(path)))
    assert config.network.peers == ("http://file:1",)
    config = effective_config(_serve_args("--config", str(path), "--peer", "http://b:1/",
                                          "--peer", "http://c:1", "--public-url", "http://a:1"))
    assert config.network == NetworkSettings("http://a:1", ("http://b:1", "http://c:1"))
    for flags in (("--peer", "b:1"), ("--public-url", "http://a:1?x"),
                  ("--peer", "http://b:1", "--peer", "http://b:1")):
        with pytest.raises(ConfigError):
            effective_config(_serve_args(*flags))
    refused = subprocess.run([sys.executable, "-m", "appliance.cli", "serve", "--data-dir",
                              str(tmp_path / "d"), "--peer", "nowhere"], capture_output=True,
                             text=True, check=False, cwd=REPO, timeout=60)
    assert refused.returncode == 78 and "--peer" in refused.stderr, refused.stderr
    assert not (tmp_path / "d").exists()


def test_peer_trust_settings(tmp_path: Path) -> None:
    policy = tmp_path / "peers.yaml"
    policy.write_text("any_measurement: true\n")
    config = parse_config(f"network:\n  peer_policy: {policy}\n  allow_emulated_peers: true\n",
                          "n.yaml")
    assert (config.network.peer_policy, config.network.allow_emulated_peers) == (policy, True)
    with pytest.raises(ConfigError, match=r"network\.peer_policy"):
        parse_config(f"network:\n  peer_policy: {tmp_path / 'missing.yaml'}\n", "n.yaml")
    assert not effective_config(_serve_args()).network.allow_emulated_peers
    assert effective_config(_serve_args("--allow-emulated-peers")).network.allow_emulated_peers
    policy.write_text("allowed_measurements: [nothex]\n")
    bad = tmp_path / "c.yaml"
    bad.write_text(f"network:\n  peer_policy: {policy}\n")
    refused = subprocess.run([sys.executable, "-m", "appliance.cli", "serve", "--data-dir",
                              str(tmp_path / "d"), "--http", "127.0.0.1:0", "--tee", "emulated",
                              "--config", str(bad)], capture_output=True, text=True,
                             check=False, cwd=REPO, timeout=120)
    assert refused.returncode == 78 and "network.peer_policy" in refused.stderr, refused.stderr
    assert not (tmp_path / "d").exists()
    checked = _check(bad)
    assert checked.returncode == 78 and "network.peer_policy" in checked.stderr, checked.stderr


def test_an_empty_file_means_every_default() -> None:
    assert parse_config("", "empty.yaml") == AppConfig()


@pytest.mark.parametrize(("text", "where", "what"), [
    ("tee: emulated\nlisten:\n  htp: 127.0.0.1:1\n", ":3:3", "htp"),
    ("tee: emulated\ntee: tdx\n", ":2:1", "duplicate"),
    ("tls:\n  plaintext_loopback: yes\n", ":2:23", "YAML 1.1"),
    ("node:\n  batch_size: 010\n", ":2:15", "ambiguous"),
    ("node:\n  workers: 0\n", ":2:12", "workers"),
    ("node:\n  dry_run_concurrency: 0\n", ":2:24", "dry_run_concurrency"),
    ("http:\n  max_connections: 0\n", ":2:20", "http.max_connections"),
    ("http:\n  header_timeout_seconds: fast\n", ":2:27", "must be a number"),
    ("http:\n  max_conections: 5\n", ":2:3", "max_conections"),
    ("node:\n  max_item_bytes: lots\n", ":2:19", "not a size"),
    ("node:\n  memory_budget_bytes: 1 KiB\n", ":2:24", "memory_budget_bytes"),
    ("limits:\n  memory: 1-tb-ish\n", ":2:11", "not a size"),
    ("tee: sgx\n", ":1:6", "must be one of"),
    ("listen:\n  http: nowhere\n", ":2:9", "HOST:PORT"),
    ("listen:\n  grpc: 0.0.0.0:50051\n", ":1:1", "needs tls"),
    ("network:\n  public_url: 127.0.0.1:8734\n", ":2:15", "http:// or https://"),
    ("network:\n  peers: [http://a:1, ftp://b]\n", ":2:23", "network.peers item"),
    ("network:\n  peers: [http://a:1, http://a:1/]\n", ":2:10", "each once"),
    ("network:\n  peers: http://a:1\n", ":2:10", "must be a list"),
    ("network:\n  refresh_seconds: 0\n", ":2:20", "network.refresh_seconds"),
    ("network:\n  peer: [http://a:1]\n", ":2:3", "peer"),
    ("- just\n- a list\n", ":1:1", ""),
    ("base: &a {x: 1}\nother: *a\n", ":1:7", ""),
])
def test_bad_files_name_the_place(text: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bad.yaml")
    message = str(info.value)
    assert message.startswith(f"bad.yaml{where}"), message
    assert what in message


def test_tls_files_must_exist_and_come_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a readable file"):
        parse_config(f"tls:\n  ca_file: {tmp_path / 'missing.pem'}\n", "t.yaml")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="needs all of"):
        parse_config(f"tls:\n  ca_file: {ca}\n", "t.yaml")


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"tee: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "check-config", str(path)],
                          capture_output=True, text=True, check=False, cwd=REPO, timeout=60)


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    ok = _check(good)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  workers: 0\n")
    refused = _check(bad)
    assert refused.returncode == 78
    assert f"{bad}:2:12" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_shipped_example_is_valid() -> None:
    assert _check(REPO / "systemd" / "config.example.yaml").returncode == 0
