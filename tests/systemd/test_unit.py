"""The systemd unit and its installer.

- ``systemd-analyze verify`` of the unit as install.sh installs it (into a scratch root, so that the
  ExecStart= binaries really exist; the shipped unit is not edited) prints nothing;
- ``systemd-analyze security --offline=true --threshold=20`` passes: exposure <= 2.0;
- ``install.sh --root DIR`` installs, a second run changes nothing (same paths, modes, owners,
  sizes, mtimes), ``--dry-run`` changes nothing, operator config is never overwritten,
  ``--uninstall`` removes what it installed and keeps the node's data and config unless ``--purge``.

The scratch install is a real one: the wheel is built from this checkout (``pip wheel --no-deps``,
reproducible) and installed into a fresh venv with its dependencies, so the installed
``ao-appliance`` command runs (about 15 s with a warm pip cache; needs the package index like the
rest of tests/run.sh). Installing with ``--no-deps`` would be faster but would leave a command that
cannot start, which is exactly what these tests are meant to catch.

Without systemd-analyze / systemd-sysusers, or when not root (install.sh sets root:ao-appliance
ownership), the tests skip; with ``AO_APPLIANCE_REQUIRE_SYSTEMD=1`` they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.cli.exitcodes import EXIT_CONFIG
from tests.support.paths import REPO

SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "ao-appliance.service"
INSTALL = SYSTEMD / "install.sh"
REQUIRE = "AO_APPLIANCE_REQUIRE_SYSTEMD"
MAX_EXPOSURE = 2.0

# What install.sh puts in place (relative to the root).
INSTALLED = [
    "etc/systemd/system/ao-appliance.service",
    "etc/sysusers.d/ao-appliance.conf",
    "etc/udev/rules.d/60-ao-appliance-tee.rules",
    "opt/ao-appliance/venv/bin/ao-appliance",
    "opt/ao-appliance/libexec/tsm-report-entry",
    "etc/ao-appliance/config.yaml",
    "etc/ao-appliance/config.example.yaml",
]
REMOVED_BY_UNINSTALL = [*INSTALLED[:4], "opt/ao-appliance"]
# Enabled offline (systemctl --root): the symlink is absolute, so check it as a link.
WANTS = "etc/systemd/system/multi-user.target.wants/ao-appliance.service"


def _missing(reason: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} (required because {REQUIRE}=1)")
    pytest.skip(reason)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} not found (Debian: apt install systemd)")
    assert path is not None
    return path


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _install(root: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("bash", INSTALL, "--root", root, *args, check=check)


def _tree(root: Path) -> dict[str, tuple[int, int, int, int, int]]:
    """Every path under root with (mode, uid, gid, size, mtime_ns); symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                                st.st_mtime_ns)
    return out


def _units_dir() -> Path:
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "multi-user.target").exists():
            return candidate
    _missing("no systemd unit directory with multi-user.target on this host")
    raise AssertionError  # unreachable


# ------------------------------------------------------------------------------ static checks


def unit_settings(text: str) -> dict[str, list[str]]:
    """Directive -> values of a unit file (comments and sections dropped)."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_unit_contract_with_the_code_and_the_other_files() -> None:
    unit = UNIT.read_text()
    settings = unit_settings(unit)
    assert settings["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert "DynamicUser" not in settings
    # No MemoryDenyWriteExecute, and the unit says why (the wasm JIT).
    assert "MemoryDenyWriteExecute" not in settings
    assert re.search(r"MemoryDenyWriteExecute= is deliberately NOT set.*WebAssembly JIT", unit)
    # The TEE group is the same in the unit, sysusers and the udev rule.
    (group,) = settings["SupplementaryGroups"]
    assert re.search(rf"^g\s+{group}\s", (SYSTEMD / "ao-appliance.sysusers").read_text(), re.M)
    rules = (SYSTEMD / "60-ao-appliance-tee.rules").read_text()
    for device in ("sev-guest", "tdx_guest"):
        assert f'KERNEL=="{device}", GROUP="{group}", MODE="0660"' in rules
        assert f"/dev/{device} rw" in settings["DeviceAllow"]
    assert settings["User"] == settings["Group"] == ["ao-appliance"]
    assert re.search(r"^u\s+ao-appliance\s", (SYSTEMD / "ao-appliance.sysusers").read_text(), re.M)


def test_install_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        _missing("shellcheck not found (Debian: apt install shellcheck)")
    _run(shellcheck, "-x", INSTALL, SYSTEMD / "tsm-report-entry.sh")


# ------------------------------------------------------------------------------ systemd-analyze


def test_security_exposure_at_most_2() -> None:
    analyze = _tool("systemd-analyze")
    proc = _run(analyze, "security", "--offline=true", "--threshold=20", "--no-pager", UNIT,
                check=False)
    match = re.search(r"Overall exposure level for ao-appliance\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security: exposure {score} (threshold {MAX_EXPOSURE})")
    assert score <= MAX_EXPOSURE, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@dataclass
class Installed:
    root: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    tree_after_first: dict[str, tuple[int, int, int, int, int]]
    tree_after_second: dict[str, tuple[int, int, int, int, int]]
    wheel: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    _tool("systemd-analyze")
    _tool("systemd-sysusers")
    if os.geteuid() != 0:
        _missing("install.sh needs root (it sets root:ao-appliance ownership)")
    base = tmp_path_factory.mktemp("systemd")
    wheels = base / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "-w", wheels, REPO)
    (wheel,) = wheels.glob("ao_appliance-*.whl")
    root = base / "root"
    root.mkdir()
    first = _install(root, "--wheel", wheel)
    after_first = _tree(root)
    second = _install(root, "--wheel", wheel)
    return Installed(root, first, second, after_first, _tree(root), wheel)


def test_verify_installed_unit_has_empty_output(installed: Installed, tmp_path: Path) -> None:
    """verify --root on a copy of the scratch install plus this host's own system units (the
    targets the unit orders against); the unit file is the one install.sh installed, unedited."""
    root = tmp_path / "root"
    _run("cp", "-a", installed.root, root)
    units = root / "usr/lib/systemd/system"
    units.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(_units_dir(), units, symlinks=True)
    assert (root / "etc/systemd/system/ao-appliance.service").read_bytes() == UNIT.read_bytes()
    proc = _run(_tool("systemd-analyze"), "verify", f"--root={root}", "ao-appliance.service",
                check=False)
    print(f"systemd-analyze verify: exit {proc.returncode}, stdout {proc.stdout!r}, "
          f"stderr {proc.stderr!r}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    # verify does look at the binaries: without the installed command it complains.
    (root / "opt/ao-appliance/venv/bin/ao-appliance").unlink()
    proc = _run(_tool("systemd-analyze"), "verify", f"--root={root}", "ao-appliance.service",
                check=False)
    assert "is not executable" in proc.stderr


# ------------------------------------------------------------------------------ install.sh


def test_install_lays_out_the_tree(installed: Installed) -> None:
    root = installed.root
    for rel in INSTALLED:
        assert (root / rel).exists(), rel
    assert os.readlink(root / WANTS) == "/etc/systemd/system/ao-appliance.service"
    # The venv is built on the system python, never one the unit hides (ProtectHome=yes).
    base = os.path.realpath(root / "opt/ao-appliance/venv/bin/python")
    assert not base.startswith(("/root/", "/home/")), base
    group = (root / "etc/group").read_text()
    match = re.search(r"^ao-appliance:x:(\d+):", group, re.M)
    assert match
    gid = int(match.group(1))
    assert re.search(r"^ao-appliance-tee:x:\d+:", group, re.M)
    assert re.search(r"^ao-appliance:x:\d+:\d+:", (root / "etc/passwd").read_text(), re.M)
    conf_dir = (root / "etc/ao-appliance").stat()
    assert (conf_dir.st_mode & 0o7777, conf_dir.st_uid, conf_dir.st_gid) == (0o750, 0, gid)
    conf = (root / "etc/ao-appliance/config.yaml").stat()
    assert (conf.st_mode & 0o7777, conf.st_uid, conf.st_gid) == (0o640, 0, gid)
    # The installed command runs.
    proc = _run(root / "opt/ao-appliance/venv/bin/ao-appliance", "--version")
    assert proc.stdout.startswith("ao-appliance ")
    assert "check-config: configuration valid" in installed.first.stdout


def test_second_run_changes_nothing(installed: Installed) -> None:
    assert installed.tree_after_second == installed.tree_after_first
    lines = [ln for ln in installed.second.stdout.splitlines() if ln.startswith("install.sh: ")]
    changes = [ln for ln in lines if re.match(r"install\.sh: (install|create|set up|remove) ", ln)]
    assert changes == [], installed.second.stdout


def test_dry_run_changes_nothing(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _run("cp", "-a", installed.root, root)
    before = _tree(root)
    proc = _install(root, "--wheel", installed.wheel, "--dry-run")
    assert "dry run: nothing was changed" in proc.stdout
    proc = _install(root, "--uninstall", "--purge", "--dry-run")
    assert "would run: rm -rf" in proc.stdout
    assert _tree(root) == before


def test_operator_config_is_never_overwritten(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _run("cp", "-a", installed.root, root)
    conf = root / "etc/ao-appliance/config.yaml"
    conf.write_text("# the operator's own settings\n")
    proc = _install(root, "--wheel", installed.wheel)
    assert "kept /etc/ao-appliance/config.yaml" in proc.stdout
    assert conf.read_text() == "# the operator's own settings\n"


def test_uninstall_keeps_data_and_config_unless_purge(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    _run("cp", "-a", installed.root, root)
    key = root / "var/lib/ao-appliance/node.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"identity")

    _install(root, "--uninstall")
    for rel in REMOVED_BY_UNINSTALL:
        assert not (root / rel).exists(), rel
    assert not (root / WANTS).is_symlink()
    assert key.read_bytes() == b"identity"
    assert (root / "etc/ao-appliance/config.yaml").exists()
    # A second uninstall is a no-op.
    assert "install.sh: remove " not in _install(root, "--uninstall").stdout

    _install(root, "--uninstall", "--purge")
    assert not (root / "var/lib/ao-appliance").exists()
    assert not (root / "etc/ao-appliance").exists()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    proc = _run("bash", INSTALL, "--purge", "--dry-run", check=False)
    assert proc.returncode != 0
    assert "--purge only goes with --uninstall" in proc.stderr
    proc = _run("bash", INSTALL, "--root", tmp_path / "absent", "--dry-run", check=False)
    assert proc.returncode != 0
    assert "no such directory" in proc.stderr
