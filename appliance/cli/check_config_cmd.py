"""``ao-appliance check-config FILE``: exit 0 when the configuration is valid, 78 otherwise."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.cli.serve_cmd import peer_policy
from appliance.config import load_config


def register(sub: Any) -> None:
    """Register the ``check-config`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "check-config", help="validate a configuration file (exit 0 valid, 78 invalid)")
    parser.add_argument("file", type=Path)
    parser.set_defaults(func=check_config)


def check_config(args: argparse.Namespace) -> int:
    """Validate and print a one-line summary; errors carry file:line:col. The peer policy
    file a configuration names is read as ``serve`` reads it."""
    config = load_config(args.file)
    peer_policy(config)
    listen = config.listen
    parts = [f"tee={config.tee}", f"http={listen.http[0]}:{listen.http[1]}"]
    if listen.grpc:
        parts.append(f"grpc={listen.grpc[0]}:{listen.grpc[1]}"
                     + (" (mTLS)" if config.tls.enabled else " (plaintext, loopback)"))
    if listen.grpc_unix:
        parts.append(f"grpc_unix={listen.grpc_unix}")
    if listen.metrics:
        parts.append(f"metrics={listen.metrics[0]}:{listen.metrics[1]}")
    print(f"{args.file}: valid ({', '.join(parts)})")
    return 0
