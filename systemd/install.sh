#!/usr/bin/env bash
# Install, upgrade or remove ao-appliance as a hardened systemd service.
#
#   sudo systemd/install.sh                      build a wheel from this checkout, install, enable, start
#   sudo systemd/install.sh --wheel FILE.whl     install a given wheel (upgrade: same command, new wheel)
#   sudo systemd/install.sh --uninstall [--purge]
#   systemd/install.sh --dry-run ...             print what would change, change nothing
#   sudo systemd/install.sh --root DIR ...       install into a scratch root (no live-system calls;
#                                                the unit is enabled offline with systemctl --root)
#
# Idempotent: a second run with the same wheel changes nothing. Never overwrites
# /etc/ao-appliance/config.yaml. --uninstall keeps /var/lib/ao-appliance (the node key and data) and
# /etc/ao-appliance unless --purge is given. See docs/operator-guide.md.
set -euo pipefail
umask 022

readonly NAME=ao-appliance
readonly TEE_GROUP=ao-appliance-tee
readonly OPT=/opt/ao-appliance
readonly VENV=$OPT/venv
readonly STAMP=$OPT/installed-wheel.sha256
readonly HELPER=$OPT/libexec/tsm-report-entry
readonly DOC=$OPT/share/doc/operator-guide.md
readonly UNIT=/etc/systemd/system/$NAME.service
readonly SYSUSERS=/etc/sysusers.d/$NAME.conf
readonly UDEV_RULE=/etc/udev/rules.d/60-$NAME-tee.rules
readonly CONF_DIR=/etc/$NAME
readonly CONF=$CONF_DIR/config.yaml
readonly CONF_EXAMPLE=$CONF_DIR/config.example.yaml
readonly STATE_DIR=/var/lib/$NAME
readonly TSM_ENTRY=/sys/kernel/config/tsm/report/$NAME
readonly EX_CONFIG=78

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

usage() {
  cat <<EOF
usage: install.sh [--wheel FILE] [--python PYTHON] [--root DIR] [--no-start] [--dry-run]
       install.sh --uninstall [--purge] [--root DIR] [--dry-run]

  --wheel FILE     install this wheel instead of building one from $repo
  --python PYTHON  interpreter for the venv (default: /usr/bin/python3, the system python; must be
                   >= 3.11 with venv/ensurepip, and outside /root and /home, which the unit hides)
  --root DIR       install under DIR (a scratch or image root): every path is prefixed with DIR and
                   the running systemd and udev are not touched: users are made with
                   systemd-sysusers --root and the unit is enabled with systemctl --root.
                   The venv's scripts then name DIR in their #! lines: such a tree is for inspection
                   and tests, not for copying to / as is.
  --no-start       enable the service but do not start or restart it
  --dry-run        print every change that would be made, make none
  --uninstall      stop and disable the service, remove unit, rules, sysusers entry and $OPT;
                   keep $STATE_DIR and $CONF_DIR
  --purge          with --uninstall: also delete $STATE_DIR (THE NODE KEY) and $CONF_DIR
EOF
}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

root="" wheel="" python=/usr/bin/python3 dry_run=0 uninstall=0 purge=0 start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root="$2"; shift 2 ;;
    --root=*) root="${1#*=}"; shift ;;
    --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; wheel="$2"; shift 2 ;;
    --wheel=*) wheel="${1#*=}"; shift ;;
    --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python="$2"; shift 2 ;;
    --python=*) python="${1#*=}"; shift ;;
    --no-start) start=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ "$purge" -eq 0 ] || [ "$uninstall" -eq 1 ] || die "--purge only goes with --uninstall"

if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root $root: no such directory"
  root="$(cd "$root" && pwd)"
  [ "$root" != / ] || root=""
fi
if [ -n "$wheel" ]; then
  [ -f "$wheel" ] || die "--wheel $wheel: no such file"
  wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
fi
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "must run as root (files are owned by root and the $NAME group); try --dry-run"
fi

# live: talk to the running systemd and udev. Only without --root and on a systemd-booted system.
live=0
if [ -z "$root" ]; then
  if [ -d /run/systemd/system ]; then
    live=1
  else
    say "systemd is not running here (no /run/systemd/system): installing files only; skipping systemctl and udevadm"
  fi
fi

sysroot=()  # systemctl's offline mode for the target root
[ -z "$root" ] || sysroot=(--root="$root")

r() { printf '%s%s' "$root" "$1"; }   # a target path under --root

run() {  # run a command, or show it under --dry-run
  if [ "$dry_run" -eq 1 ]; then
    printf '  would run:'; printf ' %q' "$@"; printf '\n'
  else
    printf '  +'; printf ' %q' "$@"; printf '\n'
    "$@"
  fi
}

changed=0  # set when anything the running service depends on changed (restart needed)

gid_of() {  # numeric gid of a group in the target root (names resolve against the target's /etc)
  local gid
  if [ "$1" = root ]; then printf 0; return 0; fi
  gid="$(awk -F: -v n="$1" '$1 == n { print $3; exit }' "$(r /etc/group)" 2>/dev/null || true)"
  if [ -z "$gid" ]; then
    [ "$dry_run" -eq 1 ] || die "group $1 does not exist in $(r /etc/group)"
    gid="$1"  # dry run before the group exists: show the name
  fi
  printf '%s' "$gid"
}

put() {  # put SRC MODE DST [GROUP]: install a file if its content, mode or group differ
  local src="$1" mode="$2" dst group="${4:-root}" gid
  dst="$(r "$3")"
  gid="$(gid_of "$group")"
  if [ -f "$dst" ] && cmp -s "$src" "$dst" \
      && [ "$(stat -c '%a %u %g' "$dst")" = "${mode#0} 0 $gid" ]; then
    say "unchanged $3"
    return 0
  fi
  say "install $3 (mode $mode, root:$group)"
  run install -D -m "$mode" -o 0 -g "$gid" "$src" "$dst"
  changed=1
}

udev_reload() {  # apply the rule to existing devices; not fatal: the rule also applies at boot
  if ! run udevadm control --reload \
      || ! run udevadm trigger --action=change --subsystem-match=misc \
             --sysname-match=sev-guest --sysname-match=tdx_guest; then
    say "warning: udevadm failed (is systemd-udevd running?); the TEE device rule applies from the next boot"
  fi
}

remove() {  # remove a file or tree if present
  local dst
  dst="$(r "$1")"
  if [ -e "$dst" ] || [ -L "$dst" ]; then
    say "remove $1"
    run rm -rf -- "$dst"
  fi
}

# ------------------------------------------------------------------------------------- uninstall
if [ "$uninstall" -eq 1 ]; then
  if [ -e "$(r "$UNIT")" ]; then
    if [ "$live" -eq 1 ]; then
      run systemctl disable --now "$NAME.service"
    else
      run systemctl "${sysroot[@]}" disable "$NAME.service"
    fi
  fi
  remove "$UNIT"
  remove "$UDEV_RULE"
  remove "$SYSUSERS"
  remove "$OPT"
  if [ "$live" -eq 1 ]; then
    run systemctl daemon-reload
    systemctl reset-failed "$NAME.service" 2>/dev/null || true
    udev_reload
    [ ! -d "$TSM_ENTRY" ] || run rmdir "$TSM_ENTRY"
  fi
  if [ "$purge" -eq 1 ]; then
    remove "$STATE_DIR"
    remove "$CONF_DIR"
    say "purged: node key, data and configuration are gone"
  else
    say "kept $STATE_DIR (node key and data) and $CONF_DIR; --purge deletes them"
  fi
  say "the $NAME user and the $NAME, $TEE_GROUP groups are kept (remove with userdel/groupdel)"
  if [ "$dry_run" -eq 1 ]; then say "dry run: nothing was changed"; else say "uninstalled"; fi
  exit 0
fi

# ------------------------------------------------------------------------------------- install
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$python is missing or older than 3.11 (use --python; Debian: apt install python3 python3-venv)"
# The venv links to its base interpreter; the service must be able to run it under ProtectHome=yes
# (a pyenv or ~/.local python is invisible to it).
base="$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
case "$base" in
  /root/*|/home/*|/run/user/*) die "$python is $base, which the service cannot see (ProtectHome=yes); use a system python (--python /usr/bin/python3)" ;;
esac
for tool in systemd-sysusers install cmp sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt install systemd coreutils diffutils)"
done

# 1. users and groups first: the files below are owned by the ao-appliance group.
put "$here/ao-appliance.sysusers" 0644 "$SYSUSERS"
if [ -n "$root" ]; then
  run systemd-sysusers --root="$root" "$(r "$SYSUSERS")"
else
  run systemd-sysusers "$SYSUSERS"
fi

# 2. the venv, from the system python.
venv_ok=0
if [ "$("$(r "$VENV")/bin/python" -c 'import os, sys; print(os.path.realpath(sys.executable))' \
       2>/dev/null || true)" = "$base" ]; then
  venv_ok=1
  say "unchanged $VENV"
else
  [ ! -e "$(r "$VENV")" ] || say "$VENV is broken or from another python: recreating"
  remove "$VENV"
  say "create $VENV with $python"
  run "$python" -m venv "$(r "$VENV")"
  changed=1
fi

# 3. the wheel: given, or built from this checkout (needs network for the build backend).
tmp=""
cleanup() { [ -z "$tmp" ] || rm -rf -- "$tmp"; }
trap cleanup EXIT
if [ -z "$wheel" ]; then
  [ -f "$repo/pyproject.toml" ] || die "no --wheel given and no pyproject.toml in $repo"
  if [ "$dry_run" -eq 1 ] && [ "$venv_ok" -eq 0 ]; then
    say "would build a wheel from $repo"
  else
    tmp="$(mktemp -d)"
    say "build wheel from $repo"
    "$(r "$VENV")/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
      -w "$tmp" "$repo" >&2
    wheel="$(ls "$tmp"/*.whl)"
  fi
fi
if [ -n "$wheel" ]; then
  sum="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [ "$venv_ok" -eq 1 ] && [ "$(cat "$(r "$STAMP")" 2>/dev/null || true)" = "$sum" ] \
      && "$(r "$VENV")/bin/ao-appliance" --version >/dev/null 2>&1; then
    say "unchanged wheel $(basename "$wheel") ($sum)"
  else
    say "install $(basename "$wheel") ($sum) and its dependencies"
    pip=("$(r "$VENV")/bin/python" -m pip install --quiet --disable-pip-version-check)
    run "${pip[@]}" "$wheel"
    # Same version, new build (a rebuilt checkout): make sure the new content is what is installed.
    run "${pip[@]}" --no-deps --force-reinstall "$wheel"
    if [ "$dry_run" -eq 0 ]; then
      printf '%s\n' "$sum" > "$(r "$STAMP")"
    fi
    changed=1
  fi
fi

# 4. unit, udev rule, helper, guide.
put "$here/ao-appliance.service" 0644 "$UNIT"
put "$here/60-ao-appliance-tee.rules" 0644 "$UDEV_RULE"
put "$here/tsm-report-entry.sh" 0755 "$HELPER"
if [ -f "$repo/docs/operator-guide.md" ]; then
  put "$repo/docs/operator-guide.md" 0644 "$DOC"
fi

# 5. configuration: root:ao-appliance 0750 directory; config.yaml is the operator's and is never
#    overwritten; the example is refreshed.
conf_gid="$(gid_of "$NAME")"
if [ "$(stat -c '%a %u %g' "$(r "$CONF_DIR")" 2>/dev/null || true)" = "750 0 $conf_gid" ]; then
  say "unchanged $CONF_DIR"
else
  say "set up $CONF_DIR (mode 0750, root:$NAME)"
  run install -d -m 0750 -o 0 -g "$conf_gid" "$(r "$CONF_DIR")"
fi
put "$here/config.example.yaml" 0640 "$CONF_EXAMPLE" "$NAME"
if [ -e "$(r "$CONF")" ]; then
  say "kept $CONF (operator configuration is never overwritten)"
else
  say "create $CONF from the example"
  run install -m 0640 -o 0 -g "$conf_gid" "$here/config.example.yaml" "$(r "$CONF")"
  changed=1
fi

# 6. validate the configuration with the installed command.
cli="$(r "$VENV")/bin/ao-appliance"
if [ ! -x "$cli" ]; then
  say "skip validation: $VENV/bin/ao-appliance is not installed yet (dry run)"
else
  set +e
  PYTHONDONTWRITEBYTECODE=1 "$cli" check-config "$(r "$CONF")"
  rc=$?
  set -e
  case "$rc" in
    0) say "check-config: configuration valid: $CONF" ;;
    "$EX_CONFIG") die "$CONF is invalid (see above); fix it and run install.sh again (the service was not (re)started)" ;;
    *) die "check-config failed with exit code $rc" ;;
  esac
fi

# 7. live system: udev, systemd.
if [ "$live" -eq 1 ]; then
  udev_reload
  run systemctl daemon-reload
  if [ "$start" -eq 1 ]; then
    if [ "$changed" -eq 1 ] && systemctl -q is-active "$NAME.service"; then
      run systemctl restart "$NAME.service"
    fi
    run systemctl enable --now "$NAME.service"
  else
    run systemctl enable "$NAME.service"
  fi
elif [ -n "$(find "$(r /etc/systemd/system)" -path '*.wants/*' -name "$NAME.service" 2>/dev/null)" ]; then
  say "unchanged: $NAME.service enabled"
else
  # No running systemd (image root, container): enable offline, it starts at the next boot.
  run systemctl "${sysroot[@]}" enable "$NAME.service"
fi

if [ "$dry_run" -eq 1 ]; then
  say "dry run: nothing was changed"
else
  say "done${root:+ (under $root)}"
  [ "$live" -eq 0 ] || say "status: systemctl status $NAME; logs: journalctl -u $NAME"
fi
