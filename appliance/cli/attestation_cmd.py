"""``ao-appliance attestation``: report, verify, measure (filled in by the attestation work)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Register the ``attestation`` sub-command group."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "attestation", help="produce and verify TEE evidence"
    )

    def _help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)
