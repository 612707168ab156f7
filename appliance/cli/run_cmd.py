"""``ao-appliance run``: evaluate a message stream through a module, one JSON result per line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.compute.limits import limits_from_tags
from appliance.errors import ApplianceError, UsageError


def default_cache_dir() -> Path:
    """Where compiled modules are cached (``$XDG_CACHE_HOME/ao-appliance/modules``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ao-appliance" / "modules"


def register(sub: Any) -> None:
    """Register the ``run`` sub-command."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "run", help="evaluate messages through a module locally (legacy-CU semantics)",
        description="Evaluate MSGS.jsonl through the module; print one result JSON per message.")
    parser.add_argument("--module", required=True, type=Path, help="the wasm module")
    parser.add_argument("--format", required=True, help="module format, e.g. "
                        "wasm64-unknown-emscripten-draft_2024_02_15")
    parser.add_argument("--env", required=True, type=Path, help="JSON env given to every handle")
    parser.add_argument("--messages", required=True, type=Path,
                        help="JSON lines, one message per line (first: the process itself)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="compiled-module cache (default: %(default)s → XDG cache)")
    parser.set_defaults(func=run)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path} is not JSON: {exc}") from None


def _read_messages(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read messages {path}: {exc}") from None
    messages = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not a JSON object: {exc}") from None
        if not isinstance(msg, dict):
            raise UsageError(f"{path}:{number}: each line must be a JSON object")
        messages.append(msg)
    return messages


def run(args: argparse.Namespace) -> int:
    """Evaluate every message; results go to stdout, diagnostics to stderr."""
    env = _read_json(args.env, "env")
    if not isinstance(env, dict):
        raise UsageError(f"env {args.env} must be a JSON object")
    messages = _read_messages(args.messages)
    try:
        fmt = module_format(args.format)
        wasm = args.module.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read module {args.module}: {exc}") from None
    except ApplianceError as exc:
        raise UsageError(str(exc)) from None
    tags: list[dict[str, str]] = []
    for holder in (env.get("Module"), env.get("Process")):
        if isinstance(holder, dict) and isinstance(holder.get("Tags"), list):
            tags += holder["Tags"]
    try:
        limits = limits_from_tags(tags, ComputeLimits())
        engine = ComputeEngine(args.cache_dir or default_cache_dir())
        instance = engine.instantiate(engine.load(wasm, fmt), limits)
    except ApplianceError as exc:
        raise UsageError(str(exc)) from None
    out = sys.stdout
    for msg in messages:
        result = instance.handle(msg, env)
        out.write(json.dumps(result.as_json(), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        out.flush()
    return 0
