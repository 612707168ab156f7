"""The echo module (bench/echo.wat) as a Module item: a real wasm module that answers every message
with the same small result, so node, actor, pipeline and crash tests run without npm or aos."""

from __future__ import annotations

from pathlib import Path

import wasmtime

from appliance.ao import items
from appliance.node.identity import NodeIdentity

ECHO_WAT = Path(__file__).resolve().parents[2] / "bench" / "echo.wat"
ECHO_FORMAT = "wasm32-unknown-emscripten4"
ECHO_OUTPUT = "echo"
"""The ``Output`` of every echo result."""


def echo_module(client: NodeIdentity) -> items.Item:
    """The echo Module item, signed by ``client``."""
    wasm = bytes(wasmtime.wat2wasm(ECHO_WAT.read_text()))
    return items.sign(client, data=wasm, tags=[("Data-Protocol", "ao"), ("Type", "Module"),
                                               ("Module-Format", ECHO_FORMAT)])
