#!/bin/sh
# Prepare the node's configfs-tsm attestation-report entry; installed as
# /opt/ao-appliance/libexec/tsm-report-entry and run by ao-appliance.service as
#   ExecStartPre=+/opt/ao-appliance/libexec/tsm-report-entry
# i.e. as root, outside the sandbox, for this one step only.
#
# Why: with configfs-tsm (Linux >= 6.7; the only upstream way to get a TDX quote) a report is made by
# creating a directory under /sys/kernel/config/tsm/report, writing inblob and reading outblob.
# configfs creates the new entry's attribute files owned by root (inblob is write-only for its
# owner), so the unprivileged service could create an entry but not use it. This helper creates one
# entry, /sys/kernel/config/tsm/report/ao-appliance, and hands it to the service user; the unit makes
# exactly that path writable (ReadWritePaths=). The node reuses the entry for every report and checks
# its "generation" attribute to detect concurrent writers.
#
# Idempotent. Does nothing (exit 0) when configfs-tsm is absent: the node then uses the
# /dev/sev-guest or /dev/tdx_guest ioctl.
set -eu
user=ao-appliance
report=/sys/kernel/config/tsm/report
entry="$report/ao-appliance"

[ -d "$report" ] || exit 0
[ -d "$entry" ] || mkdir "$entry"
chown -R "$user:$user" "$entry"
