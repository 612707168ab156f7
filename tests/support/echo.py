"""The echo module (bench/echo.wat) as a Module item: a real wasm module that answers every message
with the same small result, so node, actor, pipeline and crash tests run without npm or aos."""

from __future__ import annotations

import json
import re
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


def relay_module(client: NodeIdentity, target: str, spawn_module: str | None = None,
                 assign: str | None = None) -> items.Item:
    """A module answering every message with one Message to ``target`` (given
    ``spawn_module``, one Spawn of a process of it; given ``assign``, an Assignment of that
    message to ``target``): outbox delivery without npm."""
    spawns = [{"Tags": [{"name": "Module", "value": spawn_module}]}] if spawn_module else []
    assignments = [{"Message": assign, "Processes": [target]}] if assign else []
    result = {"ok": True, "response": {"Output": "relayed", "Messages": [
        {"Target": target, "Data": "relayed", "Tags": [{"name": "Action", "value": "Relay"}]}],
        "Spawns": spawns, "Assignments": assignments}}
    text = json.dumps(result, separators=(",", ":")).replace("\\", "\\\\").replace('"', '\\"')
    data = f'(data (i32.const 1024) "{text}\\00")'
    wat = re.sub(r'\(data \(i32\.const 1024\) ".*"\)', lambda _: data, ECHO_WAT.read_text())
    wasm = bytes(wasmtime.wat2wasm(wat))
    return items.sign(client, data=wasm, tags=[("Data-Protocol", "ao"), ("Type", "Module"),
                                               ("Module-Format", ECHO_FORMAT)])
