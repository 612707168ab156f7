"""Reference values: a launch-config YAML (``firmware-config/*.yaml``) → expected measurements.

SEV-SNP launch digests are computed with the ``sev-snp-measure`` package (SEV-SNP ABI §8.17 page
measurement, QEMU's VMSA and kernel-hashes table). Its file-free building blocks are used, so a
config may give either files (OVMF, kernel, initrd; relative to the YAML) or only their hashes.
With only the OVMF launch-digest hash, the OVMF's SEV metadata (the GPAs the VMM measures after
the firmware, and the SEV-ES reset vector) must be written in the config, since that is all of the
firmware the computation reads besides its hash.

TDX has no packaged MRTD calculator this project trusts: TDX reference values (MRTD, RTMRs) are
taken from a measured boot and recorded in the config, with a note saying where they came from.

Reads the files a config names; verification code never imports this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sevsnpmeasure import guest as snp_guest  # type: ignore[import-untyped]
from sevsnpmeasure.gctx import GCTX  # type: ignore[import-untyped]
from sevsnpmeasure.ovmf import OVMF, SectionType  # type: ignore[import-untyped]
from sevsnpmeasure.sev_hashes import SevHashes  # type: ignore[import-untyped]
from sevsnpmeasure.sev_mode import SevMode  # type: ignore[import-untyped]
from sevsnpmeasure.vcpu_types import CPU_SIGS  # type: ignore[import-untyped]
from sevsnpmeasure.vmm_types import VMMType  # type: ignore[import-untyped]
from sevsnpmeasure.vmsa import VMSA  # type: ignore[import-untyped]

from attestation.errors import PolicyError
from attestation.evidence import Platform
from attestation.strict_yaml import Node, hex_bytes, integer, load_strict, mapping, sequence, string

MEASUREMENT_SIZE = 48
MAX_OVMF_BYTES = 64 << 20
MAX_IMAGE_BYTES = 2 << 30
MAX_VCPUS = 512
VCPU_TYPES = tuple(sorted(CPU_SIGS))
VMM_TYPES = {"qemu": VMMType.QEMU, "ec2": VMMType.ec2, "gce": VMMType.gce}
SECTION_TYPES = {"sec_mem": SectionType.SNP_SEC_MEM, "secrets": SectionType.SNP_SECRETS,
                 "cpuid": SectionType.CPUID, "svsm_caa": SectionType.SVSM_CAA,
                 "kernel_hashes": SectionType.SNP_KERNEL_HASHES}

_TOP = {"platform", "description", "sev_snp", "tdx", "expected"}
_SNP = {"vmm", "vcpus", "vcpu_type", "guest_features", "ovmf", "kernel", "kernel_sha256",
        "initrd", "initrd_sha256", "cmdline", "cmdline_sha256"}
_OVMF = {"file", "launch_digest", "metadata"}
_METADATA = {"sev_es_reset_eip", "kernel_hashes_table_gpa", "sections"}
_SECTION = {"gpa", "size", "type"}
_TDX = {"source", "mrtd", "rtmrs"}
_EXPECTED = {"measurement"}
_HEX_INT = re.compile(r"^0x[0-9a-fA-F]{1,16}$")


@dataclass(frozen=True)
class OvmfSection:
    """One entry of the OVMF SEV metadata table: pages the VMM adds after the firmware."""

    gpa: int
    size: int
    kind: str


@dataclass(frozen=True)
class OvmfMetadata:
    """What the SNP launch digest needs from an OVMF image besides its own page digest."""

    sev_es_reset_eip: int
    kernel_hashes_table_gpa: int | None
    sections: tuple[OvmfSection, ...]


@dataclass(frozen=True)
class Blob:
    """A file (path relative to the config) or its digest; ``where`` is ``file:line:col``."""

    where: str
    path: str | None = None
    digest: bytes | None = None


@dataclass(frozen=True)
class SnpLaunch:
    """An SEV-SNP launch: firmware, direct-boot images, vCPUs and VMM as the host starts it."""

    vmm: str
    vcpus: int
    vcpu_type: str
    guest_features: int
    ovmf: Blob
    ovmf_metadata: OvmfMetadata | None
    kernel: Blob | None = None
    initrd: Blob | None = None
    cmdline: str | None = None
    cmdline_sha256: bytes | None = None


@dataclass(frozen=True)
class TdxRecorded:
    """TDX reference values recorded from a measured boot (``source`` says which one)."""

    source: str
    mrtd: bytes
    rtmrs: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ExpectedSlot:
    """Where the recorded measurement sits in the file, for ``--write``."""

    line: int
    col: int
    text: str


@dataclass(frozen=True)
class LaunchConfig:
    """A validated launch config and the measurement recorded in it (None when absent)."""

    source: str
    platform: Platform
    description: str
    snp: SnpLaunch | None
    tdx: TdxRecorded | None
    expected_measurement: bytes | None
    expected_slot: ExpectedSlot | None
    has_expected_section: bool


@dataclass(frozen=True)
class Measurements:
    """Computed (SNP) or recorded (TDX) reference values for one config.

    ``measurement`` is the SNP launch digest or the TDX MRTD; ``inputs`` the digests it came from.
    """

    config: LaunchConfig
    measurement: bytes
    computed: bool
    inputs: Mapping[str, str]
    rtmrs: Mapping[int, bytes] = field(default_factory=dict)
    ovmf_metadata: OvmfMetadata | None = None

    @property
    def matches_recorded(self) -> bool | None:
        """True/False when the config records a measurement, None when it records none.

        TDX values are the recorded ones, so they always match.
        """
        if not self.computed:
            return True
        if self.config.expected_measurement is None:
            return None
        return self.config.expected_measurement == self.measurement


# --- loading ---------------------------------------------------------------------------------

def _where(node: Node) -> str:
    return f"{node.source}:{node.line}:{node.col}"


def _address(node: Node, what: str) -> int:
    if isinstance(node.value, str) and _HEX_INT.match(node.value):
        return int(node.value, 16)
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        return integer(node, what, 0, (1 << 64) - 1)
    raise node.error(f"{what} must be an integer or a quoted hex string such as \"0x800000\"")


def _page_multiple(node: Node, what: str) -> int:
    value = _address(node, what)
    if value % 4096:
        raise node.error(f"{what} must be a multiple of 4096, got {value:#x}")
    return value


def _section(node: Node) -> OvmfSection:
    keys = mapping(node, _SECTION, "ovmf.metadata.sections item")
    for name in sorted(_SECTION - keys.keys()):
        raise node.error(f"ovmf.metadata.sections item needs {name!r}")
    kind = string(keys["type"], "section type")
    if kind not in SECTION_TYPES:
        raise keys["type"].error(f"unknown section type {kind!r} (one of "
                                 f"{', '.join(sorted(SECTION_TYPES))})")
    return OvmfSection(_page_multiple(keys["gpa"], "section gpa"),
                       _page_multiple(keys["size"], "section size"), kind)


def _metadata(node: Node) -> OvmfMetadata:
    keys = mapping(node, _METADATA, "ovmf.metadata")
    if "sev_es_reset_eip" not in keys or "sections" not in keys:
        raise node.error("ovmf.metadata needs sev_es_reset_eip and sections")
    table = keys.get("kernel_hashes_table_gpa")
    return OvmfMetadata(
        sev_es_reset_eip=_address(keys["sev_es_reset_eip"], "sev_es_reset_eip"),
        kernel_hashes_table_gpa=_address(table, "kernel_hashes_table_gpa") if table else None,
        sections=tuple(sequence(keys["sections"], "ovmf.metadata.sections", _section, 64)),
    )


def _ovmf(node: Node) -> tuple[Blob, OvmfMetadata | None]:
    keys = mapping(node, _OVMF, "sev_snp.ovmf")
    if ("file" in keys) == ("launch_digest" in keys):
        raise node.error("sev_snp.ovmf needs exactly one of file (the OVMF image) or "
                         "launch_digest (its SNP page digest, 48 bytes hex)")
    metadata = _metadata(keys["metadata"]) if "metadata" in keys else None
    if "file" in keys:
        return Blob(_where(keys["file"]), path=string(keys["file"], "ovmf.file")), metadata
    if metadata is None:
        raise node.error("ovmf.launch_digest needs ovmf.metadata (sev_es_reset_eip, sections, "
                         "kernel_hashes_table_gpa): `measure` prints them for an OVMF file")
    digest = hex_bytes(keys["launch_digest"], "ovmf.launch_digest", MEASUREMENT_SIZE)
    return Blob(_where(keys["launch_digest"]), digest=digest), metadata


def _blob(keys: dict[str, Node], name: str) -> Blob | None:
    hashed = f"{name}_sha256"
    if name in keys and hashed in keys:
        raise keys[hashed].error(f"give {name} or {hashed}, not both")
    if name in keys:
        return Blob(_where(keys[name]), path=string(keys[name], f"sev_snp.{name}"))
    if hashed in keys:
        return Blob(_where(keys[hashed]), digest=hex_bytes(keys[hashed], hashed, 32))
    return None


def _guest_features(node: Node) -> int:
    value = _address(node, "sev_snp.guest_features")
    if value >= 1 << 64:
        raise node.error("sev_snp.guest_features must fit in 64 bits")
    return value


def _snp(node: Node) -> SnpLaunch:
    keys = mapping(node, _SNP, "sev_snp")
    for name in ("vcpus", "vcpu_type", "ovmf"):
        if name not in keys:
            raise node.error(f"sev_snp needs {name!r}")
    vmm = string(keys["vmm"], "sev_snp.vmm") if "vmm" in keys else "qemu"
    if vmm not in VMM_TYPES:
        raise keys["vmm"].error(f"unknown vmm {vmm!r} (one of {', '.join(VMM_TYPES)})")
    vcpu_type = string(keys["vcpu_type"], "sev_snp.vcpu_type")
    if vcpu_type not in CPU_SIGS:
        raise keys["vcpu_type"].error(f"unknown vcpu_type {vcpu_type!r} (one of "
                                      f"{', '.join(VCPU_TYPES)})")
    ovmf, metadata = _ovmf(keys["ovmf"])
    kernel, initrd = _blob(keys, "kernel"), _blob(keys, "initrd")
    if "cmdline" in keys and "cmdline_sha256" in keys:
        raise keys["cmdline_sha256"].error("give cmdline or cmdline_sha256, not both")
    cmdline = string(keys["cmdline"], "sev_snp.cmdline") if "cmdline" in keys else None
    cmdline_sha = hex_bytes(keys["cmdline_sha256"], "cmdline_sha256", 32) \
        if "cmdline_sha256" in keys else None
    if kernel is None and (initrd or cmdline is not None or cmdline_sha):
        raise node.error("initrd and cmdline are only measured with a kernel (direct boot)")
    return SnpLaunch(
        vmm=vmm,
        vcpus=integer(keys["vcpus"], "sev_snp.vcpus", 1, MAX_VCPUS),
        vcpu_type=vcpu_type,
        guest_features=_guest_features(keys["guest_features"]) if "guest_features" in keys else 0,
        ovmf=ovmf, ovmf_metadata=metadata, kernel=kernel, initrd=initrd,
        cmdline=cmdline, cmdline_sha256=cmdline_sha,
    )


def _tdx(node: Node) -> TdxRecorded:
    keys = mapping(node, _TDX, "tdx")
    if "source" not in keys or "mrtd" not in keys:
        raise node.error("tdx needs mrtd and source (where the recorded values were measured)")
    rtmrs: dict[int, bytes] = {}
    if "rtmrs" in keys:
        for index, value in mapping(keys["rtmrs"], {"0", "1", "2", "3"}, "tdx.rtmrs").items():
            rtmrs[int(index)] = hex_bytes(value, f"tdx.rtmrs.{index}", MEASUREMENT_SIZE)
    return TdxRecorded(string(keys["source"], "tdx.source"),
                       hex_bytes(keys["mrtd"], "tdx.mrtd", MEASUREMENT_SIZE), rtmrs)


def load_launch_config(text: str, source: str) -> LaunchConfig:
    """Parse and validate a launch config; every problem is a PolicyError with file:line:col."""
    root = load_strict(text, source)
    keys = mapping(root, _TOP, "the launch config")
    if "platform" not in keys:
        raise root.error("the launch config needs platform: sev-snp or tdx")
    name = string(keys["platform"], "platform")
    if name not in (Platform.SEV_SNP, Platform.TDX):
        raise keys["platform"].error(f"platform must be sev-snp or tdx, got {name!r}")
    platform = Platform(name)
    section = "sev_snp" if platform is Platform.SEV_SNP else "tdx"
    other = "tdx" if platform is Platform.SEV_SNP else "sev_snp"
    if section not in keys:
        raise root.error(f"platform {name} needs a {section} section")
    if other in keys:
        raise keys[other].error(f"a {other} section does not belong in a {name} config")
    expected, slot = None, None
    if "expected" in keys:
        fields = mapping(keys["expected"], _EXPECTED, "expected")
        if platform is Platform.TDX and fields:
            raise keys["expected"].error("TDX values are recorded under tdx (mrtd, rtmrs)")
        if "measurement" in fields:
            node = fields["measurement"]
            expected = hex_bytes(node, "expected.measurement", MEASUREMENT_SIZE)
            slot = ExpectedSlot(node.line, node.col, node.text or "")
    return LaunchConfig(
        source=source,
        platform=platform,
        description=string(keys["description"], "description") if "description" in keys else "",
        snp=_snp(keys["sev_snp"]) if platform is Platform.SEV_SNP else None,
        tdx=_tdx(keys["tdx"]) if platform is Platform.TDX else None,
        expected_measurement=expected,
        expected_slot=slot,
        has_expected_section="expected" in keys,
    )


# --- computing -------------------------------------------------------------------------------

def _resolve(blob: Blob, base_dir: Path, what: str, limit: int) -> Path:
    assert blob.path is not None
    path = base_dir / blob.path
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PolicyError(f"{blob.where}: {what} {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise PolicyError(f"{blob.where}: {what} {path} is not a regular file")
    if size > limit:
        raise PolicyError(f"{blob.where}: {what} {path} is larger than {limit} bytes")
    return path


def _sha256_file(blob: Blob, base_dir: Path, what: str) -> bytes:
    if blob.digest is not None:
        return blob.digest
    path = _resolve(blob, base_dir, what, MAX_IMAGE_BYTES)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise PolicyError(f"{blob.where}: {what} {path}: {exc.strerror or exc}") from None
    return digest.digest()


class _RecordedOvmf:
    """The part of sev-snp-measure's OVMF interface that page measurement uses, from a config."""

    def __init__(self, metadata: OvmfMetadata) -> None:
        self._metadata = metadata
        self._items = [_SectionDesc(s.gpa, s.size, SECTION_TYPES[s.kind])
                       for s in metadata.sections]

    def metadata_items(self) -> list[_SectionDesc]:
        return self._items

    def has_metadata_section(self, kind: Any) -> bool:
        return any(item.section_type() == kind for item in self._items)

    def sev_hashes_table_gpa(self) -> int:
        if self._metadata.kernel_hashes_table_gpa is None:
            raise PolicyError("ovmf.metadata.kernel_hashes_table_gpa is needed with a kernel")
        return self._metadata.kernel_hashes_table_gpa


@dataclass(frozen=True)
class _SectionDesc:
    gpa: int
    size: int
    kind: Any

    def section_type(self) -> Any:
        return self.kind


def ovmf_metadata(path: Path) -> tuple[bytes, OvmfMetadata]:
    """An OVMF image's SNP page digest and SEV metadata (what a hash-only config records)."""
    try:
        ovmf = OVMF(str(path))
        gctx = GCTX()
        gctx.update_normal_pages(ovmf.gpa(), ovmf.data())
        digest = bytes(gctx.ld())
        names = {kind: name for name, kind in SECTION_TYPES.items()}
        sections = tuple(OvmfSection(int(d.gpa), int(d.size), names[d.section_type()])
                         for d in ovmf.metadata_items())
        table = int(ovmf.sev_hashes_table_gpa()) if ovmf.is_sev_hashes_table_supported() else None
        eip = int(ovmf.sev_es_reset_eip())
    except (OSError, RuntimeError, ValueError, KeyError, AssertionError) as exc:
        raise PolicyError(f"{path}: not a usable SEV-SNP OVMF image ({exc})") from None
    return digest, OvmfMetadata(eip, table, sections)


def _snp_digest(launch: SnpLaunch, base_dir: Path) -> tuple[bytes, dict[str, str],
                                                           OvmfMetadata]:
    inputs: dict[str, str] = {}
    if launch.ovmf.path is not None:
        digest, from_file = ovmf_metadata(_resolve(launch.ovmf, base_dir, "OVMF", MAX_OVMF_BYTES))
        if launch.ovmf_metadata is not None and launch.ovmf_metadata != from_file:
            raise PolicyError(f"{launch.ovmf.where}: ovmf.metadata differs from the image's own "
                              "SEV metadata; remove it or fix it")
        metadata = from_file
    else:
        assert launch.ovmf.digest is not None and launch.ovmf_metadata is not None
        digest, metadata = launch.ovmf.digest, launch.ovmf_metadata
    inputs["ovmf_launch_digest"] = digest.hex()
    hashes = None
    if launch.kernel is not None:
        hashes = SevHashes.__new__(SevHashes)
        hashes.kernel_hash = _sha256_file(launch.kernel, base_dir, "kernel")
        hashes.initrd_hash = _sha256_file(launch.initrd, base_dir, "initrd") \
            if launch.initrd else hashlib.sha256(b"").digest()
        hashes.cmdline_hash = launch.cmdline_sha256 if launch.cmdline_sha256 is not None \
            else hashlib.sha256((launch.cmdline or "").encode() + b"\0").digest()
        inputs.update(kernel_sha256=hashes.kernel_hash.hex(),
                      initrd_sha256=hashes.initrd_hash.hex(),
                      cmdline_sha256=hashes.cmdline_hash.hex())
    ovmf = _RecordedOvmf(metadata)
    vmm = VMM_TYPES[launch.vmm]
    gctx = GCTX(seed=digest)
    try:
        snp_guest.snp_update_metadata_pages(gctx, ovmf, hashes, vmm)
        vmsa = VMSA(SevMode.SEV_SNP, metadata.sev_es_reset_eip, CPU_SIGS[launch.vcpu_type],
                    launch.guest_features, vmm)
        for page in vmsa.pages(launch.vcpus):
            gctx.update_vmsa_page(page)
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise PolicyError(f"{launch.ovmf.where}: cannot compute the launch digest: {exc}") \
            from None
    return bytes(gctx.ld()), inputs, metadata


def compute_measurements(config: LaunchConfig, base_dir: Path) -> Measurements:
    """The SNP launch digest for ``config`` (files relative to ``base_dir``), or the TDX values
    recorded in it."""
    if config.tdx is not None:
        return Measurements(config, config.tdx.mrtd, computed=False,
                            inputs={"source": config.tdx.source}, rtmrs=config.tdx.rtmrs)
    assert config.snp is not None
    digest, inputs, metadata = _snp_digest(config.snp, base_dir)
    return Measurements(config, digest, computed=True, inputs=inputs, ovmf_metadata=metadata)


# --- output ----------------------------------------------------------------------------------

def render(result: Measurements) -> str:
    """Human-readable summary ending with a policy snippet (allowed_measurements)."""
    config = result.config
    lines = [f"config: {config.source}", f"platform: {config.platform}"]
    if config.description:
        lines.append(f"description: {config.description}")
    if config.snp is not None:
        snp = config.snp
        lines.append(f"launch: vmm={snp.vmm} vcpus={snp.vcpus} vcpu_type={snp.vcpu_type} "
                     f"guest_features={snp.guest_features:#x}")
    lines += [f"{key}: {value}" for key, value in result.inputs.items()]
    kind = "computed" if result.computed else "recorded (TDX MRTD from a measured boot)"
    lines.append(f"measurement ({kind}): {result.measurement.hex()}")
    lines += [f"rtmr{index}: {value.hex()}" for index, value in sorted(result.rtmrs.items())]
    verdict = result.matches_recorded
    if verdict is None and result.computed:
        lines.append("recorded: none (run with --write to record it)")
    elif verdict is False:
        assert config.expected_measurement is not None
        lines.append(f"recorded: {config.expected_measurement.hex()} — MISMATCH")
    elif verdict and result.computed:
        lines.append("recorded: matches")
    metadata = result.ovmf_metadata
    if metadata is not None and config.snp is not None and config.snp.ovmf.path is not None:
        lines += ["", "# OVMF metadata (for a config giving only ovmf.launch_digest)",
                  "metadata:", f"  sev_es_reset_eip: \"{metadata.sev_es_reset_eip:#x}\""]
        if metadata.kernel_hashes_table_gpa is not None:
            lines.append(f"  kernel_hashes_table_gpa: \"{metadata.kernel_hashes_table_gpa:#x}\"")
        lines.append("  sections:")
        lines += [f"    - {{gpa: \"{s.gpa:#x}\", size: \"{s.size:#x}\", type: {s.kind}}}"
                  for s in metadata.sections]
    lines += ["", "# policy snippet", "allowed_measurements:",
              f"  - \"{result.measurement.hex()}\""]
    return "\n".join(lines) + "\n"


def with_recorded_measurement(text: str, config: LaunchConfig, measurement: bytes) -> str:
    """``text`` with ``expected.measurement`` set to ``measurement``, comments kept."""
    if config.platform is not Platform.SEV_SNP:
        raise PolicyError(f"{config.source}: TDX values are recorded by hand under tdx (mrtd, "
                          "rtmrs); there is nothing to compute")
    value = f"\"{measurement.hex()}\""
    lines = text.splitlines(keepends=True)
    slot = config.expected_slot
    if slot is None:
        if config.has_expected_section:
            raise PolicyError(f"{config.source}: add `measurement:` under `expected:` (or remove "
                              "the empty `expected:`), then run --write again")
        tail = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{tail}expected:\n  measurement: {value}\n"
    line = lines[slot.line - 1]
    start = slot.col - 1
    end = start + len(slot.text)
    if line[start:start + 1] in ("'", '"'):
        end += 2
    lines[slot.line - 1] = line[:start] + value + line[end:]
    return "".join(lines)
