"""``ao-appliance run``: evaluate a message stream through a module, one JSON result per line."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Register the ``run`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser("run", help="evaluate messages locally")
    parser.set_defaults(func=lambda _args: 2)
