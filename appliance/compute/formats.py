"""The module formats AO processes declare (``Module-Format`` tag) and what each implies."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import ModuleError


@dataclass(frozen=True)
class ModuleFormat:
    """One AO module format: its name, pointer width and whether gas is reported.

    ``asyncify_data`` is the buffer the format's JS runtime mallocs (and frees) around every
    asynchronous import call (Asyncify's header plus its 40 MiB stack); 0 when the runtime has no
    Asyncify. The guest's heap layout, and so every address it prints, depends on it.
    ``main_argv`` is how the format's runtime calls ``main()`` once at start-up: ``None`` not at
    all, ``()`` as ``main(0, 0)``, or with those arguments (argv[0] first) on the stack.
    ``minified`` formats (the first one) import ``a.a``... and export ``E``... instead of names.
    ``time_by_pointer``: ``_gmtime_js``/``_localtime_js`` take a pointer to a 32-bit time.
    ``wide_strings``: the runtime's ``ccall`` reserves ``4 * length + 1`` stack bytes per string
    argument (length in UTF-16 units) rather than its UTF-8 size; addresses, and with them
    Lua's hash seed and so the gas, depend on it.
    ``metering`` formats are rewritten with AO's gas metering, counting in ``pointer_size`` ints.
    ``stack_cookie``: the runtime (an assertions build) writes emscripten's stack cookie at
    start-up: two words at the stack's end and ``"emsc"`` at address 0, which the guest then
    reads wherever it dereferences a null pointer.
    ``environ``: the environment the runtime gives the guest (``environ_get``).
    ``invoke_via_dyncall``: the runtime's ``invoke_*`` landing pads call their target through
    the guest's ``dynCall_*`` export rather than the function table; metered, so it costs gas.
    """

    name: str
    memory64: bool
    metering: bool
    heap_max: int
    asyncify_data: int = 0
    main_argv: tuple[str, ...] | None = None
    minified: bool = False
    time_by_pointer: bool = False
    wide_strings: bool = False
    stack_cookie: bool = True
    environ: tuple[str, ...] = ()
    invoke_via_dyncall: bool = False

    @property
    def pointer_size(self) -> int:
        """Bytes per guest pointer (4 on wasm32, 8 on wasm64)."""
        return 8 if self.memory64 else 4

    @property
    def meter_type(self) -> str | None:
        """The loader's meter type for the AO gas rewrite (``None`` for plain formats)."""
        if not self.metering:
            return None
        return "i64" if self.memory64 else "i32"


_WASM32_HEAP_MAX = 4_294_901_760  # 65535 pages, emscripten's getHeapMax for wasm32
_LEGACY_HEAP_MAX = 524_288_000  # the first two formats' runtimes: the build's memory limit
_WASM64_HEAP_MAX = 17_179_869_184  # 16 GiB, emscripten's getHeapMax for wasm64
# The first three runtimes' default environment (the later ones give none); "_" is argv[0].
_EMSCRIPTEN_ENVIRON = ("USER=web_user", "LOGNAME=web_user", "PATH=/", "PWD=/",
                       "HOME=/home/web_user", "LANG=C.UTF-8", "_=./this.program")
_ASYNCIFY_STACK = 41_943_040  # the loader's Asyncify.StackSize
_ASYNCIFY32 = 12 + _ASYNCIFY_STACK  # header: stack start, stack end, rewind id (3 x 4 bytes)
_ASYNCIFY64 = 24 + _ASYNCIFY_STACK  # the same header with 8-byte fields

FORMATS: dict[str, ModuleFormat] = {
    f.name: f
    for f in (
        ModuleFormat("wasm32-unknown-emscripten", False, False, _LEGACY_HEAP_MAX,
                     main_argv=(), minified=True, time_by_pointer=True, wide_strings=True,
                     stack_cookie=False, environ=_EMSCRIPTEN_ENVIRON),
        ModuleFormat("wasm32-unknown-emscripten2", False, False, _LEGACY_HEAP_MAX,
                     main_argv=("./this.program",), time_by_pointer=True, wide_strings=True,
                     environ=_EMSCRIPTEN_ENVIRON),
        ModuleFormat("wasm32-unknown-emscripten3", False, False, _WASM32_HEAP_MAX, main_argv=(),
                     environ=_EMSCRIPTEN_ENVIRON),
        ModuleFormat("wasm32-unknown-emscripten4", False, False, _WASM32_HEAP_MAX, _ASYNCIFY32,
                     invoke_via_dyncall=True),
        ModuleFormat("wasm32-unknown-emscripten-metering", False, True, _WASM32_HEAP_MAX,
                     _ASYNCIFY32, invoke_via_dyncall=True),
        ModuleFormat("wasm64-unknown-emscripten-draft_2024_02_15", True, False, _WASM64_HEAP_MAX,
                     _ASYNCIFY64, invoke_via_dyncall=True),
        ModuleFormat("wasm64-unknown-emscripten-draft_2024_10_16-metering", True, True,
                     _WASM64_HEAP_MAX, _ASYNCIFY64, invoke_via_dyncall=True),
    )
}


def module_format(name: str) -> ModuleFormat:
    """Look up a format by its exact name; unknown names are a :class:`ModuleError`."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise ModuleError(f"unknown module format {name!r}; supported: {known}") from None
