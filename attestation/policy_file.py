"""Policy files: YAML (strictly validated) → :class:`attestation.policy.Policy`.

There is deliberately no key that accepts emulated evidence: that is a verifier argument given on
the command line (``--allow-emulated``), never something a policy file can switch on silently.
"""

from __future__ import annotations

from attestation.policy import Policy, SnpPolicy, TdxPolicy
from attestation.strict_yaml import (
    Node,
    boolean,
    hex_bytes,
    integer,
    load_strict,
    mapping,
    sequence,
    string,
)

_TOP = {"allowed_measurements", "any_measurement", "expected_report_data", "snp", "tdx"}
_SNP = {"allow_debug", "allow_smt", "allow_migration_agent", "max_vmpl", "minimum_tcb",
        "host_data", "id_key_digest", "require_vcek", "require_crl"}
_TCB = {"bootloader", "tee", "snp", "microcode", "fmc"}
_TDX = {"allow_debug", "accepted_tcb_status", "rtmrs", "xfam", "td_attributes",
        "allow_trailing_bytes", "require_sept_ve_disable"}
_TCB_STATUSES = {"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                 "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded",
                 "Revoked"}


def _refuse_emulated(node: Node) -> None:
    for key, child in (node.value or {}).items():
        if "emulated" in key.lower():
            raise child.error(f"{key!r}: emulated evidence can only be accepted with the "
                              "--allow-emulated command-line flag, never from a policy file")


def _snp(node: Node) -> SnpPolicy:
    _refuse_emulated(node)
    keys = mapping(node, _SNP, "snp")
    tcb: dict[str, int] = {}
    if "minimum_tcb" in keys:
        for name, value in mapping(keys["minimum_tcb"], _TCB, "snp.minimum_tcb").items():
            tcb[name] = integer(value, f"snp.minimum_tcb.{name}", 0, 255)
    return SnpPolicy(
        allow_debug=boolean(keys["allow_debug"], "snp.allow_debug")
        if "allow_debug" in keys else False,
        allow_smt=boolean(keys["allow_smt"], "snp.allow_smt") if "allow_smt" in keys else True,
        allow_migration_agent=boolean(keys["allow_migration_agent"], "snp.allow_migration_agent")
        if "allow_migration_agent" in keys else False,
        max_vmpl=integer(keys["max_vmpl"], "snp.max_vmpl", 0, 3) if "max_vmpl" in keys else 0,
        minimum_tcb=tcb,
        host_data=hex_bytes(keys["host_data"], "snp.host_data", 32)
        if "host_data" in keys else None,
        id_key_digest=hex_bytes(keys["id_key_digest"], "snp.id_key_digest", 48)
        if "id_key_digest" in keys else None,
        require_vcek=boolean(keys["require_vcek"], "snp.require_vcek")
        if "require_vcek" in keys else False,
        require_crl=boolean(keys["require_crl"], "snp.require_crl")
        if "require_crl" in keys else False,
    )


def _status(node: Node) -> str:
    value = string(node, "tdx.accepted_tcb_status item")
    if value not in _TCB_STATUSES:
        known = ", ".join(sorted(_TCB_STATUSES))
        raise node.error(f"unknown TCB status {value!r} (one of {known})")
    return value


def _tdx(node: Node) -> TdxPolicy:
    _refuse_emulated(node)
    keys = mapping(node, _TDX, "tdx")
    rtmrs: dict[int, bytes] = {}
    if "rtmrs" in keys:
        for index, value in mapping(keys["rtmrs"], {"0", "1", "2", "3"}, "tdx.rtmrs").items():
            rtmrs[int(index)] = hex_bytes(value, f"tdx.rtmrs.{index}", 48)
    return TdxPolicy(
        allow_debug=boolean(keys["allow_debug"], "tdx.allow_debug")
        if "allow_debug" in keys else False,
        accepted_tcb_status=frozenset(sequence(keys["accepted_tcb_status"],
                                               "tdx.accepted_tcb_status", _status))
        if "accepted_tcb_status" in keys else frozenset({"UpToDate"}),
        rtmrs=rtmrs,
        xfam=hex_bytes(keys["xfam"], "tdx.xfam", 8) if "xfam" in keys else None,
        td_attributes=hex_bytes(keys["td_attributes"], "tdx.td_attributes", 8)
        if "td_attributes" in keys else None,
        allow_trailing_bytes=boolean(keys["allow_trailing_bytes"], "tdx.allow_trailing_bytes")
        if "allow_trailing_bytes" in keys else True,
        require_sept_ve_disable=boolean(keys["require_sept_ve_disable"],
                                        "tdx.require_sept_ve_disable")
        if "require_sept_ve_disable" in keys else True,
    )


def load_policy(text: str, source: str) -> Policy:
    """Parse and validate a policy file; every problem is a PolicyError with file:line:col."""
    root = load_strict(text, source)
    _refuse_emulated(root)
    keys = mapping(root, _TOP, "the policy")
    measurements = frozenset(sequence(
        keys["allowed_measurements"], "allowed_measurements",
        lambda n: hex_bytes(n, "allowed_measurements item", 48))) \
        if "allowed_measurements" in keys else frozenset()
    any_measurement = boolean(keys["any_measurement"], "any_measurement") \
        if "any_measurement" in keys else False
    if not measurements and not any_measurement:
        raise root.error("allowed_measurements is empty: list the reference measurements, or "
                         "say any_measurement: true to accept any (not for production)")
    return Policy(
        allowed_measurements=measurements,
        any_measurement=any_measurement,
        expected_report_data=hex_bytes(keys["expected_report_data"], "expected_report_data", 64)
        if "expected_report_data" in keys else None,
        snp=_snp(keys["snp"]) if "snp" in keys else SnpPolicy(),
        tdx=_tdx(keys["tdx"]) if "tdx" in keys else TdxPolicy(),
    )
