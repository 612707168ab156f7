"""``ao-appliance serve``: run the node (embedded SQLite store, TEE evidence, AO HTTP API)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.api.http import NODE_KEY, make_app
from appliance.errors import ConfigError, UsageError
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.settings import NodeSettings

log = logging.getLogger("appliance.serve")
TEE_CHOICES = ("auto", "emulated", "sev-snp", "tdx")


def host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (IPv6 hosts in brackets)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(sub: Any) -> None:
    """Register the ``serve`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser("serve", help="run the node")
    parser.add_argument("--data-dir", required=True, type=Path, help="node state directory")
    parser.add_argument("--config", type=Path, default=None, help="YAML configuration file")
    parser.add_argument("--http", type=host_port, default=None,
                        help="AO HTTP API listener (default 127.0.0.1:8734)")
    parser.add_argument("--tee", choices=TEE_CHOICES, default=None,
                        help="evidence provider (default auto: hardware, else emulated)")
    parser.set_defaults(func=serve)


def _provider(tee: str, state_dir: Path) -> Any:
    from attestation.providers import provider_for  # noqa: PLC0415 - device layer, on demand

    provider = provider_for(tee, state_dir)
    if provider is None:
        log.warning("NO TEE DETECTED: falling back to the EMULATED TEE. Results will carry an "
                    "emulated attestation that proves nothing about hardware.")
        provider = provider_for("emulated", state_dir)
    return provider


def serve(args: argparse.Namespace) -> int:
    """Start the node and serve until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir: Path = args.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create data dir {data_dir}: {exc}") from None
    if args.config is not None and not args.config.is_file():
        raise ConfigError(f"config file {args.config} does not exist")
    settings = NodeSettings(data_dir=data_dir)
    http = args.http or ("127.0.0.1", 8734)
    config_digest = hashlib.sha256(json.dumps(
        {"settings": repr(settings), "http": list(http)}, sort_keys=True).encode()).digest()
    identity = NodeIdentity.load_or_create(data_dir)
    provider = _provider(args.tee or "auto", data_dir / "tee")
    node = Node(settings, identity, provider, config_digest)
    log.info("node %s serving AO HTTP on %s:%d", identity.address, *http)
    try:
        asyncio.run(_serve_http(make_app(node), http))
    finally:
        node.close()
    return 0


async def _serve_http(app: web.Application, listen: tuple[str, int]) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen[0], listen[1])
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = runner.addresses[0][:2]
    node = app[NODE_KEY]
    await asyncio.to_thread(node.publish_location, f"http://{host}:{port}")
    print(json.dumps({"event": "listening", "http": f"{host}:{port}",
                      "address": node.identity.address}), flush=True)
    await stop.wait()
    await runner.cleanup()
