"""Small wasm modules as Module items, so node tests need no npm or aos: the echo module (see
:mod:`tests.support.echo`) and the loop module, which loops forever on a message whose data is
``loop`` (as ``while true do end`` would, until the node's fuel or wall-clock limit stops it)
and otherwise answers with how many messages it has handled, counted in its memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import wasmtime

from appliance.ao import items
from appliance.compute import ComputeLimits
from appliance.node.identity import NodeIdentity
from appliance.node.node import Node
from appliance.node.observer import NodeObserver
from appliance.node.settings import NodeSettings
from attestation.providers import EmulatedProvider
from tests.support.echo import ECHO_FORMAT, echo_module

__all__ = ["LOOP_DATA", "LOOP_WAT", "echo_module", "loop_module", "loop_node", "module_item"]

LOOP_DATA = "loop"
"""The data of a message the loop module never finishes."""

_PATTERN = '"Data":"loop"'
_PREFIX = '{"ok":true,"response":{"Output":"'
_SUFFIX = '","Messages":[],"Spawns":[],"Assignments":[]}}'


def _wat_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


LOOP_WAT = f"""
;; handle(msg, env): loop forever when msg (JSON) holds {_PATTERN}; else count the message in
;; memory (address 512, so checkpoints keep it) and answer Output = the count.
(module
  (memory (export "memory") 2)
  (global $sp (mut i32) (i32.const 65536))
  (data (i32.const 1024) "{_wat_string(_PATTERN)}")
  (data (i32.const 1100) "{_wat_string(_PREFIX)}")
  (data (i32.const 1200) "{_wat_string(_SUFFIX)}\\00")
  (func (export "emscripten_stack_get_current") (result i32) (global.get $sp))
  (func (export "_emscripten_stack_alloc") (param $n i32) (result i32)
    (global.set $sp (i32.and (i32.sub (global.get $sp) (local.get $n)) (i32.const -16)))
    (global.get $sp))
  (func (export "_emscripten_stack_restore") (param $v i32) (global.set $sp (local.get $v)))
  (func $matches (param $p i32) (result i32)
    (local $i i32)
    (block $no
      (loop $next
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                           (i32.load8_u (i32.add (i32.const 1024) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (i32.const {len(_PATTERN)}))))
      (return (i32.const 1)))
    (i32.const 0))
  (func $wants_loop (param $p i32) (result i32)
    (block $end
      (loop $scan
        (br_if $end (i32.eqz (i32.load8_u (local.get $p))))
        (if (call $matches (local.get $p)) (then (return (i32.const 1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const 0))
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $n i32) (local $t i32) (local $len i32)
    (if (call $wants_loop (local.get $msg)) (then (loop $forever (br $forever))))
    (local.set $n (i32.add (i32.load (i32.const 512)) (i32.const 1)))
    (i32.store (i32.const 512) (local.get $n))
    (memory.copy (i32.const 2048) (i32.const 1100) (i32.const {len(_PREFIX)}))
    (local.set $t (i32.const 1632))
    (loop $digit
      (local.set $t (i32.sub (local.get $t) (i32.const 1)))
      (i32.store8 (local.get $t)
                  (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (local.set $len (i32.sub (i32.const 1632) (local.get $t)))
    (memory.copy (i32.const {2048 + len(_PREFIX)}) (local.get $t) (local.get $len))
    (memory.copy (i32.add (i32.const {2048 + len(_PREFIX)}) (local.get $len))
                 (i32.const 1200) (i32.const {len(_SUFFIX) + 1}))
    (i32.const 2048)))
"""


def module_item(client: NodeIdentity, wat: str, fmt: str = ECHO_FORMAT) -> items.Item:
    """A Module item holding ``wat`` compiled to wasm, signed by ``client``."""
    wasm = bytes(wasmtime.wat2wasm(wat))
    return items.sign(client, data=wasm, tags=[("Data-Protocol", "ao"), ("Type", "Module"),
                                               ("Module-Format", fmt)])


def loop_module(client: NodeIdentity) -> items.Item:
    """The loop Module item, signed by ``client``."""
    return module_item(client, LOOP_WAT)


def loop_node(root: Path, observer: NodeObserver, loop_seconds: float,
              **settings: Any) -> tuple[Node, NodeIdentity, items.Item]:
    """(node, client key, loop Module item): a node with two workers under ``root`` (emulated
    TEE) whose messages may run ``loop_seconds`` of wall clock, with the loop module stored."""
    client = NodeIdentity.load_or_create(root / "client")
    data = root / "node"
    node = Node(NodeSettings(data_dir=data, workers=2,
                             limits=ComputeLimits(wall_clock_seconds=loop_seconds), **settings),
                NodeIdentity.load_or_create(data), EmulatedProvider(data / "tee"), b"\0" * 32,
                observer=observer)
    module = loop_module(client)
    try:
        node.ingest(module.raw)
    except BaseException:
        node.close()
        raise
    return node, client, module
