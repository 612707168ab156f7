"""The node's YAML configuration, strictly validated into frozen dataclasses.

Every problem is a :class:`ConfigError` carrying ``file:line:col`` (exit code 78). Command-line
flags of ``serve`` override the file. docs/operator-guide.md (Configure) documents every option.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.compute import ComputeLimits
from appliance.compute.limits import parse_size
from appliance.errors import ConfigError
from appliance.network.peers import MAX_PEERS, check_url
from appliance.node.settings import NodeOptions
from attestation.errors import PolicyError
from attestation.strict_yaml import (
    Node,
    boolean,
    integer,
    load_strict,
    mapping,
    number,
    sequence,
    string,
)

TEE_NAMES = ("auto", "emulated", "sev-snp", "tdx")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_HTTP = ("127.0.0.1", 8734)


@dataclass(frozen=True)
class Listeners:
    """Where the node listens; ``None`` turns a listener off."""

    http: tuple[str, int] = DEFAULT_HTTP
    grpc: tuple[str, int] | None = None
    grpc_unix: Path | None = None
    metrics: tuple[str, int] | None = None


@dataclass(frozen=True)
class TlsSettings:
    """mTLS for the operator gRPC listener."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    allowed_clients: tuple[str, ...] = ()
    plaintext_loopback: bool = False

    @property
    def enabled(self) -> bool:
        """True when server certificate, key and operator CA are all configured."""
        return None not in (self.ca_file, self.cert_file, self.key_file)


@dataclass(frozen=True)
class HttpLimits:
    """What one anonymous HTTP client may hold (section ``http``; docs/operator-guide.md).

    A request head must arrive within ``header_timeout_seconds`` of its first byte and a body
    within ``body_timeout_seconds`` of its head (else 408 and the connection is closed); an idle
    keep-alive connection is closed after ``idle_timeout_seconds``; at most ``max_connections``
    are open (past it a new one gets 503 and is closed); at most ``max_result_waiters`` result
    reads wait at once (503 past it); fresh attestations pass a token bucket of
    ``attestation_burst`` tokens refilled at ``attestation_rate`` per second (429 past it).
    """

    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 120.0
    idle_timeout_seconds: float = 60.0
    max_connections: int = 1024
    max_result_waiters: int = 256
    attestation_rate: float = 2.0
    attestation_burst: int = 10

    def __post_init__(self) -> None:
        if min(self.header_timeout_seconds, self.body_timeout_seconds,
               self.idle_timeout_seconds, self.attestation_rate) <= 0:
            raise ConfigError("http timeouts and attestation_rate must be positive")
        if min(self.max_connections, self.max_result_waiters, self.attestation_burst) < 1:
            raise ConfigError("http max_connections, max_result_waiters and attestation_burst "
                              "must be at least 1")


@dataclass(frozen=True)
class NetworkSettings:
    """Peering (section ``network``; docs/operator-guide.md, Several nodes): the URL this node's
    Scheduler-Location record names (None: from ``listen.http``), the peers it learns about,
    and how often it asks them again at most."""

    public_url: str | None = None
    peers: tuple[str, ...] = ()
    refresh_seconds: float = 60.0
    # Any node is a messenger (issue 14 step 2): how long a client waits for the receipt of an
    # item forwarded to the peer hosting its process before a 503 (the item stays queued).
    forward_wait_seconds: float = 10.0
    # peer trust (docs/operator-guide.md, Peer policy): the policy file peers' attestations
    # must satisfy (None: none) and whether emulated evidence is accepted (tests, laptops)
    peer_policy: Path | None = None
    allow_emulated_peers: bool = False

    def __post_init__(self) -> None:
        try:
            for url in (self.public_url, *self.peers):
                if url is not None and check_url(url) != url:
                    raise ValueError(f"URL {url!r}: give it without a trailing slash")
        except ValueError as exc:
            raise ConfigError(f"network: {exc}") from None
        if len(self.peers) > MAX_PEERS or len(set(self.peers)) != len(self.peers):
            raise ConfigError(f"network.peers: at most {MAX_PEERS} URLs, each once")
        if not 1.0 <= self.refresh_seconds <= 86_400.0:
            raise ConfigError("network.refresh_seconds must be between 1 and 86400")
        if not 0.5 <= self.forward_wait_seconds <= 300.0:
            raise ConfigError("network.forward_wait_seconds must be between 0.5 and 300")


@dataclass(frozen=True)
class AppConfig:
    """The whole configuration file."""

    tee: str = "auto"
    listen: Listeners = field(default_factory=Listeners)
    tls: TlsSettings = field(default_factory=TlsSettings)
    node: NodeOptions = field(default_factory=NodeOptions)
    limits: ComputeLimits = field(default_factory=ComputeLimits)
    http: HttpLimits = field(default_factory=HttpLimits)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    log_level: str = "info"


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 hosts in brackets); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(node: Node, what: str) -> tuple[str, int] | None:
    if node.value is None:
        return None
    try:
        return parse_host_port(string(node, what))
    except ValueError as exc:
        raise node.error(f"{what}: {exc}") from None


def _path(node: Node, what: str, must_exist: bool = False) -> Path | None:
    if node.value is None:
        return None
    path = Path(string(node, what))
    if must_exist and not os.access(path, os.R_OK):
        raise node.error(f"{what}: {path} is not a readable file")
    return path


def _choice(node: Node, what: str, choices: tuple[str, ...]) -> str:
    value = string(node, what)
    if value not in choices:
        raise node.error(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _size(node: Node, what: str, low: int, high: int) -> int:
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        value = node.value
    else:
        try:
            value = parse_size(string(node, what))
        except (ValueError, ConfigError) as exc:
            raise node.error(f"{what}: {exc}") from None
    if not low <= value <= high:
        raise node.error(f"{what} must be between {low} and {high} bytes, got {value}")
    return value


_LISTEN = {"http", "grpc", "grpc_unix", "metrics"}
_TLS = {"ca_file", "cert_file", "key_file", "allowed_clients", "plaintext_loopback"}
_INT_RANGES = {"max_item_bytes": (1024, 1 << 30), "max_push_depth": (1, 10_000),
               "batch_size": (1, 10_000), "workers": (1, 256), "shards": (1, 256),
               "checkpoint_every_messages": (1, 10**9), "block_height": (0, 2**62),
               "dry_run_fuel": (1, 2**63 - 1), "dry_run_concurrency": (1, 256),
               "max_outbox_messages": (1, 100_000), "max_crank_messages": (1, 10**9),
               "memory_budget_bytes": (1 << 20, 1 << 50)}
_FLOAT_RANGES = {"checkpoint_every_seconds": (1.0, 10**7), "result_wait_seconds": (0.0, 3600.0),
                 "dry_run_wall_clock_seconds": (0.1, 3600.0),
                 "state_checkpoint_seconds": (0.0, 10**7),
                 "attestation_refresh_seconds": (1.0, 10**7),
                 "cron_tick_seconds": (0.0, 3600.0),
                 "crank_window_seconds": (0.1, 86_400.0),
                 "move_after_seconds": (0.0, 3600.0)}
_HTTP_INTS = {"max_connections": (1, 1_000_000), "max_result_waiters": (1, 1_000_000),
              "attestation_burst": (1, 1_000_000)}
_HTTP_FLOATS = {"header_timeout_seconds": (0.1, 3600.0), "body_timeout_seconds": (0.1, 3600.0),
                "idle_timeout_seconds": (0.1, 86400.0), "attestation_rate": (0.001, 1e6)}
_LIMITS = {"memory": (1 << 16, 1 << 40), "max_response_bytes": (1024, 1 << 32)}


def _listeners(node: Node) -> Listeners:
    keys = mapping(node, _LISTEN, "listen")
    http = _address(keys["http"], "listen.http") if "http" in keys else DEFAULT_HTTP
    if http is None:
        raise keys["http"].error("listen.http cannot be null: the AO HTTP API is always on")
    return Listeners(
        http=http,
        grpc=_address(keys["grpc"], "listen.grpc") if "grpc" in keys else None,
        grpc_unix=_path(keys["grpc_unix"], "listen.grpc_unix") if "grpc_unix" in keys else None,
        metrics=_address(keys["metrics"], "listen.metrics") if "metrics" in keys else None)


def _tls(node: Node) -> TlsSettings:
    keys = mapping(node, _TLS, "tls")
    files = {name: _path(keys[name], f"tls.{name}", must_exist=True) if name in keys else None
             for name in ("ca_file", "cert_file", "key_file")}
    clients = tuple(sequence(keys["allowed_clients"], "tls.allowed_clients",
                             lambda n: string(n, "tls.allowed_clients item"))) \
        if "allowed_clients" in keys else ()
    plaintext = boolean(keys["plaintext_loopback"], "tls.plaintext_loopback") \
        if "plaintext_loopback" in keys else False
    settings = TlsSettings(files["ca_file"], files["cert_file"], files["key_file"], clients,
                           plaintext)
    if any(files.values()) and not settings.enabled:
        raise node.error("tls needs all of ca_file, cert_file and key_file")
    return settings


def _node_options(node: Node) -> NodeOptions:
    keys = mapping(node, set(_INT_RANGES) | set(_FLOAT_RANGES), "node")
    values: dict[str, Any] = {}
    for name, child in keys.items():
        if name in ("max_item_bytes", "memory_budget_bytes"):
            values[name] = _size(child, f"node.{name}", *_INT_RANGES[name])
        elif name in _INT_RANGES:
            values[name] = integer(child, f"node.{name}", *_INT_RANGES[name])
        else:
            values[name] = number(child, f"node.{name}", *_FLOAT_RANGES[name])
    return NodeOptions(**values)


def _http(node: Node) -> HttpLimits:
    keys = mapping(node, set(_HTTP_INTS) | set(_HTTP_FLOATS), "http")
    values: dict[str, Any] = {
        name: integer(child, f"http.{name}", *_HTTP_INTS[name]) if name in _HTTP_INTS
        else number(child, f"http.{name}", *_HTTP_FLOATS[name])
        for name, child in keys.items()}
    return HttpLimits(**values)


def _url(node: Node, what: str) -> str:
    try:
        return check_url(string(node, what))
    except ValueError as exc:
        raise node.error(f"{what}: {exc}") from None


def _network(node: Node) -> NetworkSettings:
    keys = mapping(node, {"public_url", "peers", "refresh_seconds", "forward_wait_seconds",
                          "peer_policy", "allow_emulated_peers"}, "network")
    peers = tuple(sequence(keys["peers"], "network.peers",
                           lambda n: _url(n, "network.peers item"))) if "peers" in keys else ()
    if len(peers) > MAX_PEERS or len(set(peers)) != len(peers):
        raise keys["peers"].error(f"network.peers: at most {MAX_PEERS} URLs, each once")
    return NetworkSettings(
        public_url=_url(keys["public_url"], "network.public_url")
        if "public_url" in keys and keys["public_url"].value is not None else None,
        peers=peers,
        refresh_seconds=number(keys["refresh_seconds"], "network.refresh_seconds", 1.0, 86_400.0)
        if "refresh_seconds" in keys else 60.0,
        forward_wait_seconds=number(keys["forward_wait_seconds"], "network.forward_wait_seconds",
                                    0.5, 300.0) if "forward_wait_seconds" in keys else 10.0,
        peer_policy=_path(keys["peer_policy"], "network.peer_policy", must_exist=True)
        if "peer_policy" in keys else None,
        allow_emulated_peers=boolean(keys["allow_emulated_peers"],
                                     "network.allow_emulated_peers")
        if "allow_emulated_peers" in keys else False)


def _limits(node: Node) -> ComputeLimits:
    keys = mapping(node, {"memory", "fuel", "wall_clock_seconds", "max_response_bytes",
                          "rollback_window"}, "limits")
    base = ComputeLimits()
    return ComputeLimits(
        memory_bytes=_size(keys["memory"], "limits.memory", *_LIMITS["memory"])
        if "memory" in keys else base.memory_bytes,
        fuel=integer(keys["fuel"], "limits.fuel", 1, 2**63 - 1)
        if "fuel" in keys else base.fuel,
        wall_clock_seconds=number(keys["wall_clock_seconds"], "limits.wall_clock_seconds",
                                  0.1, 3600.0)
        if "wall_clock_seconds" in keys else base.wall_clock_seconds,
        max_response_bytes=_size(keys["max_response_bytes"], "limits.max_response_bytes",
                                 *_LIMITS["max_response_bytes"])
        if "max_response_bytes" in keys else base.max_response_bytes,
        rollback_window=integer(keys["rollback_window"], "limits.rollback_window", 1, 100_000)
        if "rollback_window" in keys else base.rollback_window,
    )


def grpc_transport_problem(config: AppConfig) -> str | None:
    """Why ``listen.grpc`` may not serve as configured (TLS, or plaintext on loopback), or None."""
    grpc = config.listen.grpc
    if grpc is None or config.tls.enabled:
        return None
    if config.tls.plaintext_loopback and is_loopback(grpc[0]):
        return None
    return ("listen.grpc on TCP needs tls (ca_file, cert_file, key_file); plaintext is only "
            "allowed on loopback with tls.plaintext_loopback: true")


def parse_config(text: str, source: str) -> AppConfig:
    """Validate configuration text; every problem is a ConfigError with file:line:col."""
    sections = {"tee", "listen", "tls", "node", "limits", "http", "network", "log_level"}
    try:
        root = load_strict(text, source)
        keys = mapping(root, sections, "the configuration")
        config = AppConfig(
            tee=_choice(keys["tee"], "tee", TEE_NAMES) if "tee" in keys else "auto",
            listen=_listeners(keys["listen"]) if "listen" in keys else Listeners(),
            tls=_tls(keys["tls"]) if "tls" in keys else TlsSettings(),
            node=_node_options(keys["node"]) if "node" in keys else NodeOptions(),
            limits=_limits(keys["limits"]) if "limits" in keys else ComputeLimits(),
            http=_http(keys["http"]) if "http" in keys else HttpLimits(),
            network=_network(keys["network"]) if "network" in keys else NetworkSettings(),
            log_level=_choice(keys["log_level"], "log_level", LOG_LEVELS)
            if "log_level" in keys else "info",
        )
        problem = grpc_transport_problem(config)
        if problem is not None:
            raise root.error(problem)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    return config


def load_config(path: Path) -> AppConfig:
    """Read and validate ``path``; unreadable files are ConfigErrors too."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse_config(text, str(path))

