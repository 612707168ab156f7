"""The SEV-SNP ATTESTATION_REPORT structure (SEV-SNP Firmware ABI, Table "ATTESTATION_REPORT").

Versions 2, 3 (adds CPUID family/model/stepping) and 5 (adds launch mitigation vectors) are
accepted. Every byte of the 0x4A0-byte structure is represented, so encoding is exact.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from attestation.errors import MalformedEvidence

REPORT_SIZE = 0x4A0
SIGNED_LENGTH = 0x2A0
SIGNATURE_SIZE = REPORT_SIZE - SIGNED_LENGTH
SIG_COMPONENT_SIZE = 72
SIG_ALGO_ECDSA_P384_SHA384 = 1
SUPPORTED_VERSIONS = frozenset({2, 3, 5})

_HEAD = struct.Struct("<IIQ16s16sIIQQII64s48s32s48s48s32s32sQ")
_V3_CPUID = struct.Struct("<BBB")
_TAIL = struct.Struct("<64sQBBBxBBBxQ")
_V5_MIT = struct.Struct("<QQ")
_OFF_V3 = 0x188
_OFF_CHIP = 0x1A0
_OFF_V5 = 0x1F8


@dataclass(frozen=True)
class SnpReport:
    """One parsed attestation report; integer fields are little-endian in the wire format.

    ``signer_info`` is the 32-bit word at 0x48 (bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY,
    bits 2..4 SIGNING_KEY: 0 VCEK, 1 VLEK, 7 none). ``cpuid_*`` are 0 before version 3 and
    ``*_mit_vector`` are 0 before version 5. ``signature`` is the raw 512-byte field.
    """

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    signature: bytes
    cpuid_fam_id: int = 0
    cpuid_mod_id: int = 0
    cpuid_step: int = 0
    launch_mit_vector: int = 0
    current_mit_vector: int = 0

    @property
    def author_key_en(self) -> bool:
        """Whether the author key digest is present (signer info bit 0)."""
        return bool(self.signer_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        """Whether chip_id is masked to zero (signer info bit 1)."""
        return bool(self.signer_info & 2)

    @property
    def signing_key(self) -> int:
        """Key that signed the report: 0 VCEK, 1 VLEK, 7 none (signer info bits 2..4)."""
        return (self.signer_info >> 2) & 0x7

    @property
    def debug(self) -> bool:
        """Guest policy bit 19 DEBUG."""
        return bool(self.policy >> 19 & 1)

    @property
    def smt_allowed(self) -> bool:
        """Guest policy bit 16 SMT."""
        return bool(self.policy >> 16 & 1)

    @property
    def migrate_ma_allowed(self) -> bool:
        """Guest policy bit 18 MIGRATE_MA."""
        return bool(self.policy >> 18 & 1)


def _zero(data: bytes, start: int, end: int, what: str) -> None:
    if any(data[start:end]):
        raise MalformedEvidence(
            f"SNP report: reserved bytes {start:#x}..{end:#x} ({what}) not zero"
        )


def parse_report(data: bytes) -> SnpReport:
    """Parse a 0x4A0-byte attestation report strictly; raise MalformedEvidence if it is not one."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEvidence("SNP report: expected bytes")
    data = bytes(data)
    if len(data) != REPORT_SIZE:
        raise MalformedEvidence(f"SNP report: {len(data)} bytes, expected exactly {REPORT_SIZE}")
    head = _HEAD.unpack_from(data, 0)
    version, signature_algo, signer_info, reserved0 = head[0], head[6], head[9], head[10]
    if version not in SUPPORTED_VERSIONS:
        raise MalformedEvidence(f"SNP report: unsupported version {version} (known: 2, 3, 5)")
    if signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise MalformedEvidence(
            f"SNP report: signature algorithm {signature_algo}, expected 1 (ECDSA P-384 SHA-384)"
        )
    if signer_info & ~0x1F or reserved0:
        raise MalformedEvidence("SNP report: reserved bits at 0x48..0x50 not zero")
    if version >= 3:
        cpuid = _V3_CPUID.unpack_from(data, _OFF_V3)
        _zero(data, _OFF_V3 + 3, _OFF_CHIP, "after CPUID")
    else:
        cpuid = (0, 0, 0)
        _zero(data, _OFF_V3, _OFF_CHIP, "before CHIP_ID")
    _zero(data, 0x1EB, 0x1EC, "after CURRENT_MAJOR")
    _zero(data, 0x1EF, 0x1F0, "after COMMITTED_MAJOR")
    tail = _TAIL.unpack_from(data, _OFF_CHIP)
    if version >= 5:
        mit = _V5_MIT.unpack_from(data, _OFF_V5)
        _zero(data, _OFF_V5 + _V5_MIT.size, SIGNED_LENGTH, "before SIGNATURE")
    else:
        mit = (0, 0)
        _zero(data, _OFF_V5, SIGNED_LENGTH, "before SIGNATURE")
    signature = data[SIGNED_LENGTH:]
    _zero(signature, 2 * SIG_COMPONENT_SIZE, SIGNATURE_SIZE, "signature padding")
    h, t = head, tail
    return SnpReport(
        version=h[0], guest_svn=h[1], policy=h[2], family_id=h[3], image_id=h[4], vmpl=h[5],
        signature_algo=h[6], current_tcb=h[7], platform_info=h[8], signer_info=h[9],
        report_data=h[11], measurement=h[12], host_data=h[13], id_key_digest=h[14],
        author_key_digest=h[15], report_id=h[16], report_id_ma=h[17], reported_tcb=h[18],
        chip_id=t[0], committed_tcb=t[1], current_build=t[2], current_minor=t[3],
        current_major=t[4], committed_build=t[5], committed_minor=t[6], committed_major=t[7],
        launch_tcb=t[8], signature=signature,
        cpuid_fam_id=cpuid[0], cpuid_mod_id=cpuid[1], cpuid_step=cpuid[2],
        launch_mit_vector=mit[0], current_mit_vector=mit[1],
    )  # fmt: skip


def encode_report(report: SnpReport) -> bytes:
    """Serialise ``report`` to its exact 0x4A0-byte wire form (inverse of :func:`parse_report`)."""
    r = report
    out = bytearray(REPORT_SIZE)
    try:
        _HEAD.pack_into(
            out,
            0,
            r.version,
            r.guest_svn,
            r.policy,
            r.family_id,
            r.image_id,
            r.vmpl,
            r.signature_algo,
            r.current_tcb,
            r.platform_info,
            r.signer_info,
            0,
            r.report_data,
            r.measurement,
            r.host_data,
            r.id_key_digest,
            r.author_key_digest,
            r.report_id,
            r.report_id_ma,
            r.reported_tcb,
        )
        if r.version >= 3:
            _V3_CPUID.pack_into(out, _OFF_V3, r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step)
        _TAIL.pack_into(
            out,
            _OFF_CHIP,
            r.chip_id,
            r.committed_tcb,
            r.current_build,
            r.current_minor,
            r.current_major,
            r.committed_build,
            r.committed_minor,
            r.committed_major,
            r.launch_tcb,
        )
        if r.version >= 5:
            _V5_MIT.pack_into(out, _OFF_V5, r.launch_mit_vector, r.current_mit_vector)
    except struct.error as exc:
        raise MalformedEvidence(f"SNP report: field out of range: {exc}") from exc
    if len(r.signature) != SIGNATURE_SIZE:
        raise MalformedEvidence(f"SNP report: signature must be {SIGNATURE_SIZE} bytes")
    out[SIGNED_LENGTH:] = r.signature
    return bytes(out)


def encode_signature(r: int, s: int) -> bytes:
    """The 512-byte SIGNATURE field: R and S as 72-byte little-endian integers, then zeros."""
    return (
        r.to_bytes(SIG_COMPONENT_SIZE, "little")
        + s.to_bytes(SIG_COMPONENT_SIZE, "little")
        + bytes(SIGNATURE_SIZE - 2 * SIG_COMPONENT_SIZE)
    )


def decode_signature(signature: bytes) -> tuple[int, int]:
    """Inverse of :func:`encode_signature`: the (r, s) integers of a 512-byte SIGNATURE field."""
    if len(signature) != SIGNATURE_SIZE:
        raise MalformedEvidence(f"SNP signature: {len(signature)} bytes, expected {SIGNATURE_SIZE}")
    return (
        int.from_bytes(signature[:SIG_COMPONENT_SIZE], "little"),
        int.from_bytes(signature[SIG_COMPONENT_SIZE : 2 * SIG_COMPONENT_SIZE], "little"),
    )
