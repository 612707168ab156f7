"""The module formats AO processes declare (``Module-Format`` tag) and what each implies."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import ModuleError


@dataclass(frozen=True)
class ModuleFormat:
    """One AO module format: its name, pointer width and whether gas is reported."""

    name: str
    memory64: bool
    metering: bool
    heap_max: int

    @property
    def pointer_size(self) -> int:
        """Bytes per guest pointer (4 on wasm32, 8 on wasm64)."""
        return 8 if self.memory64 else 4


_WASM32_HEAP_MAX = 4_294_901_760  # 65535 pages, emscripten's getHeapMax for wasm32
_WASM64_HEAP_MAX = 17_179_869_184  # 16 GiB, emscripten's getHeapMax for wasm64

FORMATS: dict[str, ModuleFormat] = {
    f.name: f
    for f in (
        ModuleFormat("wasm32-unknown-emscripten2", False, False, _WASM32_HEAP_MAX),
        ModuleFormat("wasm32-unknown-emscripten3", False, False, _WASM32_HEAP_MAX),
        ModuleFormat("wasm32-unknown-emscripten4", False, False, _WASM32_HEAP_MAX),
        ModuleFormat("wasm32-unknown-emscripten-metering", False, True, _WASM32_HEAP_MAX),
        ModuleFormat("wasm64-unknown-emscripten-draft_2024_02_15", True, False, _WASM64_HEAP_MAX),
        ModuleFormat("wasm64-unknown-emscripten-draft_2024_10_16-metering", True, True,
                     _WASM64_HEAP_MAX),
    )
}


def module_format(name: str) -> ModuleFormat:
    """Look up a format by its exact name; unknown names are a :class:`ModuleError`."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise ModuleError(f"unknown module format {name!r}; supported: {known}") from None
