"""Types shared by providers and verifiers: what a TEE emits and what verifying it proves."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

REPORT_DATA_SIZE = 64


class Platform(enum.StrEnum):
    """TEE platform names, exactly as they appear in the ``TEE-Platform`` tag."""

    SEV_SNP = "sev-snp"
    TDX = "tdx"
    EMULATED = "emulated"


@dataclass(frozen=True)
class Evidence:
    """Raw evidence from one provider call.

    ``raw`` is the SNP attestation report or TDX quote exactly as the hardware produced it (for
    emulated evidence, an SNP-layout report signed by the per-installation emulated root).
    ``certificates`` are the DER or PEM blobs the provider returned alongside (VCEK/VLEK + ASK/ARK
    from the SNP extended report or configfs auxblob; for emulated evidence, its chain).
    """

    platform: Platform
    raw: bytes
    certificates: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class VerifiedEvidence:
    """What a successful verification established.

    ``measurement`` is the SNP launch measurement (48 bytes) or TDX MRTD (48 bytes);
    ``tcb`` the platform's TCB components as verified (SNP: bootloader/tee/snp/microcode/fmc;
    TDX: tcb status and components); ``steps`` the numbered steps that passed, in order;
    ``warnings`` what was accepted but deserves a reader's attention (it never changes the verdict:
    for example unsigned bytes after a TDX quote's signature data).
    """

    platform: Platform
    measurement: bytes
    report_data: bytes
    tcb: Mapping[str, int | str]
    debug: bool
    steps: tuple[str, ...]
    details: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


class EvidenceProvider(Protocol):
    """Anything that can produce evidence binding 64 caller-chosen bytes (report_data)."""

    platform: Platform

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Return fresh evidence whose report_data field equals ``report_data`` (64 bytes)."""
        ...
