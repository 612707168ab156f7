"""``ao-appliance serve``: run the node (embedded SQLite store, TEE evidence, AO HTTP API, and the
operator gRPC and metrics listeners when configured)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from appliance.api.http import BadHttpFilter, make_app, start_site
from appliance.cli import trust_args
from appliance.config import (
    TEE_NAMES,
    AppConfig,
    NetworkSettings,
    grpc_transport_problem,
    is_loopback,
    load_config,
    parse_host_port,
)
from appliance.errors import ConfigError, UsageError
from appliance.logfmt import fields
from appliance.metrics import NodeMetrics
from appliance.network.forward import Forwarder
from appliance.network.peers import PeerDirectory, check_url
from appliance.network.trust import PeerPolicy, PeerTrust
from appliance.node.datadir import PRIVATE_UMASK, make_private
from appliance.node.db.forwards import FORWARDS_FILE
from appliance.node.identity import KEY_FILE, NodeIdentity
from appliance.node.node import Node
from appliance.node.observer import NodeObserver
from appliance.node.remote_shard import process_shards
from appliance.node.settings import NodeSettings
from appliance.node.standing import tdx_collateral_in
from appliance.rpc.server import start_grpc
from appliance.sdnotify import sd_notify, watchdog_loop
from attestation.errors import PolicyError
from attestation.evidence import EvidenceProvider
from attestation.policy import Policy
from attestation.providers import provider_for

log = logging.getLogger("appliance.serve")


def host_port(text: str) -> tuple[str, int]:
    """argparse type for ``HOST:PORT``."""
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def shard_count(text: str) -> int:
    """argparse type for ``--shards``: 1 to 256."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"expected a number of shards from 1 to 256, got {text!r}")
    return value


def register(sub: Any) -> None:
    """Register the ``serve`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser("serve", help="run the node")
    parser.add_argument("--data-dir", required=True, type=Path, help="node state directory")
    parser.add_argument("--config", type=Path, default=None, help="YAML configuration file")
    parser.add_argument("--http", type=host_port, default=None,
                        help="AO HTTP API listener (default 127.0.0.1:8734)")
    parser.add_argument("--grpc", type=host_port, default=None, help="operator gRPC listener")
    parser.add_argument("--metrics", type=host_port, default=None,
                        help="Prometheus listener (serves /metrics)")
    parser.add_argument("--tee", choices=TEE_NAMES, default=None,
                        help="evidence provider (default auto: hardware, else emulated)")
    parser.add_argument("--shards", type=shard_count, default=None,
                        help="shard processes owning the node's processes (node.shards)")
    parser.add_argument("--public-url", default=None, metavar="URL",
                        help="the URL peers and this node's Scheduler-Location record name "
                             "(network.public_url; default: http://HOST:PORT of --http)")
    parser.add_argument("--peer", action="append", default=None, metavar="URL",
                        help="a peer node's URL, repeatable (network.peers; replaces the "
                             "file's list)")
    parser.add_argument("--allow-emulated-peers", action="store_true", default=None,
                        help="trust peers whose attestation is emulated (network."
                             "allow_emulated_peers; INSECURE: for tests and laptops only)")
    parser.set_defaults(func=serve)


def effective_config(args: argparse.Namespace) -> AppConfig:
    """The configuration file (or defaults) with command-line flags applied on top."""
    config = load_config(args.config) if args.config is not None else AppConfig()
    listen = config.listen
    if args.http is not None:
        listen = dataclasses.replace(listen, http=args.http)
    if args.grpc is not None:
        listen = dataclasses.replace(listen, grpc=args.grpc)
    if args.metrics is not None:
        listen = dataclasses.replace(listen, metrics=args.metrics)
    config = dataclasses.replace(config, listen=listen, tee=args.tee or config.tee)
    if args.shards is not None:
        config = dataclasses.replace(config, node=dataclasses.replace(config.node,
                                                                      shards=args.shards))
    config = dataclasses.replace(config, network=_network_flags(config, args))
    if args.grpc is not None and not config.tls.enabled and is_loopback(args.grpc[0]):
        config = dataclasses.replace(  # a loopback --grpc without TLS is explicit plaintext
            config, tls=dataclasses.replace(config.tls, plaintext_loopback=True))
    problem = grpc_transport_problem(config)
    if problem is not None:
        raise ConfigError(problem)
    return config


def _network_flags(config: AppConfig, args: argparse.Namespace) -> NetworkSettings:
    """``config.network`` with ``--public-url`` and ``--peer`` applied (ConfigError if bad)."""
    network = config.network
    try:
        if getattr(args, "public_url", None) is not None:
            network = dataclasses.replace(network, public_url=check_url(args.public_url))
        if getattr(args, "peer", None):
            network = dataclasses.replace(network, peers=tuple(check_url(u) for u in args.peer))
    except ValueError as exc:
        raise ConfigError(f"--public-url / --peer: {exc}") from None
    if getattr(args, "allow_emulated_peers", None):
        network = dataclasses.replace(network, allow_emulated_peers=True)
    return network


def peer_policy(config: AppConfig) -> Policy | None:
    """The ``network.peer_policy`` file, read with the loader of ``attestation verify
    --policy`` (None when not set; ConfigError if unreadable or invalid)."""
    if config.network.peer_policy is None:
        return None
    try:
        return trust_args.policy(config.network.peer_policy)[0]
    except (UsageError, PolicyError) as exc:
        raise ConfigError(f"network.peer_policy: {exc}") from None


def peer_trust(config: AppConfig, peers: PeerDirectory, data_dir: Path,
               metrics: NodeMetrics | None) -> PeerTrust:
    """The peer-trust gate of ``network.peer_policy`` / ``allow_emulated_peers`` (the policy
    file read with the loader of ``attestation verify --policy``; ConfigError if bad)."""
    rules = PeerPolicy(peer_policy(config), config.network.allow_emulated_peers,
                       tdx_collateral_in(data_dir / "collateral"))
    return PeerTrust(peers, rules, on_refusal=metrics.peer_refused if metrics else None)


def public_url(config: AppConfig, host: str, port: int) -> str:
    """The URL this node's Scheduler-Location record names: ``network.public_url``, else the
    bound HTTP address (a wildcard one is no use to peers: warned about)."""
    if config.network.public_url is not None:
        return config.network.public_url
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - detecting a wildcard bind, not binding
        log.warning("the HTTP API listens on %s: set --public-url (network.public_url) to the "
                    "URL peers and clients reach this node at; its Scheduler-Location record "
                    "names http://%s:%d meanwhile", host or "*", host, port)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def config_digest(config: AppConfig) -> bytes:
    """SHA-256 of the effective configuration (bound into every attestation)."""
    return hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True,
                                     default=str).encode()).digest()


def _provider(tee: str, state_dir: Path) -> EvidenceProvider:
    provider = provider_for(tee, state_dir)
    if provider is None:
        log.warning("NO TEE DETECTED: falling back to the EMULATED TEE. Results will carry an "
                    "emulated attestation that proves nothing about hardware.")
        provider = provider_for("emulated", state_dir)
    assert provider is not None
    return provider


def _bind(address: tuple[str, int], what: str) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        return socket.create_server(address, family=family)
    except OSError as exc:
        raise UsageError(f"cannot listen for {what} on {address[0]}:{address[1]}: "
                         f"{exc.strerror or exc}") from None


def _probe(config: AppConfig) -> None:
    """Fail before anything is created when the metrics or gRPC port is taken (they bind
    later, once the node is up; a moment's race remains)."""
    for address, what in ((config.listen.metrics, "metrics"), (config.listen.grpc, "gRPC")):
        if address is not None and address[1] != 0:
            _bind(address, what).close()


def serve(args: argparse.Namespace) -> int:
    """Start the node and serve until SIGTERM/SIGINT."""
    config = effective_config(args)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(BadHttpFilter())
    # Bind first: a node that cannot listen creates no data dir and no key.
    http_socket = _bind(config.listen.http, "the AO HTTP API")
    try:
        _probe(config)
        peer_policy(config)  # a bad policy file: refused before the data dir is made
        return _serve_bound(args, config, http_socket)
    finally:
        http_socket.close()


def _serve_bound(args: argparse.Namespace, config: AppConfig, http_socket: socket.socket) -> int:
    data_dir: Path = args.data_dir
    os.umask(PRIVATE_UMASK)  # every file the node and its workers create: 0600, dirs 0700
    try:
        narrowed = make_private(data_dir, keep=KEY_FILE)
    except OSError as exc:
        raise UsageError(f"cannot create data dir {data_dir}: {exc}") from None
    if narrowed:
        log.warning("data dir %s: narrowed %d modes to 0700/0600", data_dir, narrowed)
    settings = NodeSettings(data_dir=data_dir, limits=config.limits,
                            peered=bool(config.network.peers), **dataclasses.asdict(config.node))
    identity = NodeIdentity.load_or_create(data_dir)
    metrics = NodeMetrics() if config.listen.metrics is not None else None
    provider = _provider(config.tee, data_dir / "tee")
    digest = config_digest(config)
    log.info("node %s starting (tee %s, %d shard%s)", identity.address, provider.platform,
             settings.shards, "" if settings.shards == 1 else "s")
    shards = None
    if settings.shards > 1:
        shards = process_shards(settings, key_dir=data_dir, tee=provider.platform,
                                tee_state_dir=data_dir / "tee", config_digest=digest,
                                log_level=config.log_level, observer=metrics or NodeObserver())
    node = Node(settings, identity, provider, digest, observer=metrics, shards=shards)
    try:
        asyncio.run(_serve(node, config, metrics, http_socket))
    finally:
        sd_notify("STOPPING=1")
        started = time.perf_counter()
        node.close()
        log.info("%s", fields("shutdown complete", address=identity.address,
                              ms=(time.perf_counter() - started) * 1000))
    return 0


def _refresh_logged(node: Node) -> None:
    try:
        node.refresh_attestation()
    except Exception:  # counted as a failed standing attestation; the current one stays
        log.exception("attestation refresh on SIGHUP failed")


async def _serve(node: Node, config: AppConfig, metrics: NodeMetrics | None,
                 http_socket: socket.socket) -> None:
    if metrics is not None:
        metrics.attach(node)
    peers = PeerDirectory(config.network.peers, node.identity.address,
                          refresh_seconds=config.network.refresh_seconds)
    forwarder = None
    if config.network.peers or (node.settings.data_dir / FORWARDS_FILE).exists():
        forwarder = Forwarder(peers, node.settings.data_dir,
                              max_item_bytes=node.settings.max_item_bytes,
                              wait_seconds=config.network.forward_wait_seconds)
        node.peers = forwarder
    trust = peer_trust(config, peers, node.settings.data_dir, metrics)
    trust.announce()
    node.push_gate = trust.admit
    app = make_app(node, metrics.observe_http if metrics else None, config.http, metrics,
                   peers=peers, forwarder=forwarder, trust=trust)
    runner = await start_site(app, http_socket, config.http)
    host, port = runner.addresses[0][:2]
    url = public_url(config, host, port)
    event: dict[str, Any] = {"event": "listening", "http": f"{host}:{port}",
                             "address": node.identity.address, "url": url}
    cleanups = [runner.cleanup]
    if metrics is not None and config.listen.metrics is not None:
        metrics_runner = await metrics.start_server(*config.listen.metrics)
        cleanups.append(metrics_runner.cleanup)
        metrics_host, metrics_port = metrics_runner.addresses[0][:2]
        event["metrics"] = f"{metrics_host}:{metrics_port}"
    if config.listen.grpc is not None or config.listen.grpc_unix is not None:
        server = await start_grpc(node, config,
                                  registry=metrics.registry if metrics else None, peers=peers,
                                  trust=trust)
        cleanups.append(lambda: server.stop(5))
        event["grpc"] = server.bound_address
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def shutdown(sig: signal.Signals) -> None:
        log.info("%s", fields("shutdown", signal=sig.name))
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown, sig)
    refreshes: set[asyncio.Task[Any]] = set()

    def refresh() -> None:  # SIGHUP: re-attest now (the schedule goes on)
        task = asyncio.ensure_future(asyncio.to_thread(_refresh_logged, node))
        refreshes.add(task)
        task.add_done_callback(refreshes.discard)

    loop.add_signal_handler(signal.SIGHUP, refresh)
    await asyncio.to_thread(node.publish_location, url)
    peers.start()
    cleanups.append(lambda: asyncio.to_thread(peers.close))
    if forwarder is not None:
        forwarder.start()
        cleanups.append(lambda: asyncio.to_thread(forwarder.close))
    trust.start()
    cleanups.append(lambda: asyncio.to_thread(trust.close))
    if config.network.peers:  # push outbox items for processes the peers host
        await asyncio.to_thread(node.connect_peers, peers.route)
    print(json.dumps(event), flush=True)
    sd_notify(f"READY=1\nSTATUS=serving AO HTTP on {host}:{port}")
    watchdog = asyncio.create_task(watchdog_loop())
    await stop.wait()
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog
    for cleanup in reversed(cleanups):
        await cleanup()
