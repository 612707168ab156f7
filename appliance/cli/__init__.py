"""The ``ao-appliance`` command line: one sub-command module per concern, registered here."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from appliance import __version__
from appliance.cli import (
    attestation_cmd,
    check_config_cmd,
    ctl_cmd,
    module_cmd,
    run_cmd,
    serve_cmd,
    verify_cmd,
)
from appliance.cli.exitcodes import EXIT_USAGE, exit_code_for

PROG = "ao-appliance"
_AO_ID = re.compile(r"[A-Za-z0-9_-]{43}")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with our usage code (2) and never prints a traceback."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """A sub-command refuses the flags it does not know itself, with its own usage
        (argparse would pass them up and print the top-level usage)."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != PROG:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _parse_optional(self, arg_string: str) -> Any:
        """An AO id (43 base64url characters) is a value even when it starts with '-': about
        one id in 64 does, and argparse would take it for an unknown flag."""
        if _AO_ID.fullmatch(arg_string) and arg_string not in self._option_string_actions:
            return None
        return super()._parse_optional(arg_string)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = _Parser(prog=PROG, description=__doc__)
    parser.add_argument("--version", action="version", version=f"ao-appliance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_cmd.register(sub)
    attestation_cmd.register(sub)
    serve_cmd.register(sub)
    check_config_cmd.register(sub)
    verify_cmd.register(sub)
    ctl_cmd.register(sub)
    module_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ao-appliance`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: a clear line, never a traceback
        sys.stderr.write(f"ao-appliance: error: {exc}\n")
        return exit_code_for(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
