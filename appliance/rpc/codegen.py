"""Regenerate ``appliance/rpc/gen`` from ``operator.proto`` (grpcio-tools + mypy-protobuf).

Run ``python -m appliance.rpc.codegen`` after editing the proto; the checked-in files must equal
what this writes (tests/rpc/test_codegen.py regenerates into a temporary directory and diffs).
Both tools are test extras: the running node only needs ``protobuf`` and ``grpcio``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from appliance.errors import UsageError

RPC_DIR = Path(__file__).resolve().parent
PROTO = RPC_DIR / "operator.proto"
GEN_PACKAGE = "appliance/rpc/gen"
GENERATED = ("operator_pb2.py", "operator_pb2.pyi", "operator_pb2_grpc.py",
             "operator_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        raise UsageError(f"{name} not found: install the test extras (mypy-protobuf)")
    return found


def generate(out_root: Path) -> list[Path]:
    """Write the generated modules under ``out_root / appliance/rpc/gen``; returns their paths.

    The proto is mapped to the virtual path ``appliance/rpc/gen/operator.proto`` so that the
    generated gRPC module imports its messages as ``appliance.rpc.gen.operator_pb2``.
    """
    try:
        from grpc_tools import protoc  # noqa: PLC0415 - a test extra, needed only here
    except ModuleNotFoundError:
        raise UsageError("grpcio-tools is not installed: install the test extras") from None
    out_root.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{well_known}",
        f"-I{GEN_PACKAGE}={RPC_DIR}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        f"{GEN_PACKAGE}/{PROTO.name}",
    ]
    code = protoc.main(args)
    if code != 0:
        raise UsageError(f"protoc failed with exit code {code}")
    return [out_root / GEN_PACKAGE / name for name in GENERATED]


def main() -> int:
    """Regenerate the checked-in stubs in place."""
    for path in generate(RPC_DIR.parents[1]):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
