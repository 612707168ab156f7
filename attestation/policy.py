"""Verification policy: what evidence must show to be accepted. Always passed explicitly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SnpPolicy:
    """SEV-SNP specific requirements (AMD SEV-SNP ABI spec, guest policy and TCB_VERSION)."""

    allow_debug: bool = False
    allow_smt: bool = True
    allow_migration_agent: bool = False
    max_vmpl: int = 0
    minimum_tcb: Mapping[str, int] = field(default_factory=dict)  # bootloader/tee/snp/microcode
    host_data: bytes | None = None
    id_key_digest: bytes | None = None
    require_vcek: bool = False  # False accepts VCEK and VLEK
    require_crl: bool = False  # True: an AMD KDS CRL of the chain's product must be supplied


@dataclass(frozen=True)
class TdxPolicy:
    """TDX specific requirements (Intel TDX DCAP quote verification).

    A TCB status of Revoked is never accepted, whatever ``accepted_tcb_status`` lists.
    """

    allow_debug: bool = False
    accepted_tcb_status: frozenset[str] = frozenset({"UpToDate"})
    rtmrs: Mapping[int, bytes] = field(default_factory=dict)  # expected RTMR index -> 48 bytes
    xfam: bytes | None = None
    td_attributes: bytes | None = None
    allow_trailing_bytes: bool = True  # unsigned bytes after the signature data (padded buffers)
    require_sept_ve_disable: bool = True  # TDATTRIBUTES bit 28, as dcap-qvl and Intel advise


@dataclass(frozen=True)
class Policy:
    """A complete verification policy.

    ``allowed_measurements`` holds SNP launch measurements and/or TDX MRTDs (48 bytes each); an
    empty set accepts any measurement and must be asked for by name (``any_measurement=True``).
    ``expected_report_data`` when set must equal the evidence's report_data exactly.
    There is deliberately no field that accepts emulated evidence: that is the verifier's
    ``allow_emulated`` argument, which no policy file can set.
    """

    allowed_measurements: frozenset[bytes] = frozenset()
    any_measurement: bool = False
    expected_report_data: bytes | None = None
    snp: SnpPolicy = field(default_factory=SnpPolicy)
    tdx: TdxPolicy = field(default_factory=TdxPolicy)
