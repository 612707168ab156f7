"""The compute engine: runs AO modules (aos and other emscripten builds) under wasmtime."""

from appliance.compute.engine import (
    ComputeEngine,
    EvalResult,
    LoadedModule,
    ProcessInstance,
    Snapshot,
)
from appliance.compute.formats import FORMATS, ModuleFormat, module_format
from appliance.compute.limits import ComputeLimits

__all__ = [
    "FORMATS",
    "ComputeEngine",
    "ComputeLimits",
    "EvalResult",
    "LoadedModule",
    "ModuleFormat",
    "ProcessInstance",
    "Snapshot",
    "module_format",
]
