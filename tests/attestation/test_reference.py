"""Reference values: launch configs → SNP launch digests, recorded TDX values, `measure`."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from sevsnpmeasure import guest  # type: ignore[import-untyped]
from sevsnpmeasure.sev_mode import SevMode  # type: ignore[import-untyped]
from sevsnpmeasure.vcpu_types import CPU_SIGS  # type: ignore[import-untyped]
from sevsnpmeasure.vmm_types import VMMType  # type: ignore[import-untyped]

from appliance.cli import main
from attestation import reference
from attestation.errors import PolicyError
from attestation.policy_file import load_policy
from tests.support.paths import REPO

CONFIGS = REPO / "firmware-config"
EXAMPLE = CONFIGS / "hyperbeam-milan-example.yaml"
# The measurement of the signed Milan report in permaweb/HyperBEAM test/snp_attestation.
HB_REPORT_MEASUREMENT = ("e14c88108a2d3b9864b33790dd6275e346b077271be714f6387cc6a4"
                         "faf98da97e101b34f19a59e49707523990c3156c")
# HyperBEAM dev_snp_nif compute_launch_digest_test: 32 vCPUs, other initrd/cmdline hashes.
HB_NIF_DIGEST = ("c2648349062ecc4d8cdeb41ca2eac99c324781a9400ccf1305ebf78328cce4e6"
                 "d134e9fca2096f5739c56da5a16a353f")


def _measure(path: Path) -> reference.Measurements:
    config = reference.load_launch_config(path.read_text(), str(path))
    return reference.compute_measurements(config, path.parent)


def test_hyperbeam_example_reproduces_the_signed_report_measurement() -> None:
    result = _measure(EXAMPLE)
    assert result.measurement.hex() == HB_REPORT_MEASUREMENT
    assert result.matches_recorded is True


def test_hyperbeam_nif_test_vector_with_32_vcpus(tmp_path: Path) -> None:
    text = (EXAMPLE.read_text()
            .replace("vcpus: 1", "vcpus: 32")
            .replace("853ebf56bc6ba5f08bd5583055a457898ffa3545897bee00103d3066b8766f5c",
                     "02e28b6c718bf0a5260d6f34d3c8fe0d71bf5f02af13e1bc695c6bc162120da1")
            .replace("6cb8a0082b483849054f93b203aa7d98439736e44163d614f79380ca368cc77e",
                     "56e1e5190622c8c6b9daa4fe3ad83f3831c305bb736735bf795b284cb462c9e7"))
    path = tmp_path / "nif.yaml"
    path.write_text(text)
    result = _measure(path)
    assert result.measurement.hex() == HB_NIF_DIGEST
    assert result.matches_recorded is False


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


def _synthetic_ovmf(size: int = 64 * 1024) -> bytes:
    """A firmware image with the OVMF footer table: reset block, hashes table, SEV metadata."""
    sections = [(0x800000, 0x9000, 1), (0x80A000, 0x3000, 1), (0x80D000, 0x1000, 2),
                (0x80E000, 0x1000, 3), (0x80F000, 0x1000, 0x10), (0x810000, 0x10000, 1)]
    metadata = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    metadata += b"".join(struct.pack("<III", *s) for s in sections)
    image = bytearray(bytes(range(256)) * (size // 256))
    meta_offset = 0x1000
    image[size - meta_offset:size - meta_offset + len(metadata)] = metadata

    def entry(data: bytes, guid: str) -> bytes:
        return data + struct.pack("<H", len(data) + 18) + _guid(guid)

    table = (entry(struct.pack("<I", 0x80B004), "00f771de-1a7e-4fcb-890e-68c77e2fb44e")
             + entry(struct.pack("<II", 0x80FC00, 0x400), "7255371f-3a3b-4b04-927b-1da6efa8d454")
             + entry(struct.pack("<I", meta_offset), "dc886566-984a-4798-a75e-5585a7bf67cc"))
    footer = struct.pack("<H", len(table) + 18) + _guid("96b582de-1fb2-45f7-baea-a366c55a082d")
    tail = table + footer
    image[size - 32 - len(tail):size - 32] = tail
    return bytes(image)


@pytest.fixture
def launch_files(tmp_path: Path) -> Path:
    (tmp_path / "OVMF.fd").write_bytes(_synthetic_ovmf())
    (tmp_path / "vmlinuz").write_bytes(b"kernel image " * 1000)
    (tmp_path / "initrd.img").write_bytes(b"initrd " * 3000)
    (tmp_path / "launch.yaml").write_text(
        "platform: sev-snp\nsev_snp:\n  vcpus: 4\n  vcpu_type: EPYC-Milan\n"
        "  guest_features: \"0x1\"\n  ovmf: {file: OVMF.fd}\n  kernel: vmlinuz\n"
        "  initrd: initrd.img\n  cmdline: \"console=ttyS0 root=/dev/vda\"\n")
    return tmp_path


def test_files_agree_with_the_library_end_to_end_and_with_hash_only(launch_files: Path) -> None:
    d = launch_files
    expected = guest.calc_launch_digest(
        SevMode.SEV_SNP, 4, CPU_SIGS["EPYC-Milan"], str(d / "OVMF.fd"), str(d / "vmlinuz"),
        str(d / "initrd.img"), "console=ttyS0 root=/dev/vda", 0x1, vmm_type=VMMType.QEMU)
    from_files = _measure(d / "launch.yaml")
    assert from_files.measurement == expected

    digest, metadata = reference.ovmf_metadata(d / "OVMF.fd")
    assert metadata.sev_es_reset_eip == 0x80B004
    assert metadata.kernel_hashes_table_gpa == 0x80FC00
    sections = "\n".join(f"        - {{gpa: \"{s.gpa:#x}\", size: \"{s.size:#x}\", "
                         f"type: {s.kind}}}" for s in metadata.sections)
    inputs = from_files.inputs
    (d / "hashes.yaml").write_text(
        "platform: sev-snp\nsev_snp:\n  vcpus: 4\n  vcpu_type: EPYC-Milan\n  guest_features: 1\n"
        f"  ovmf:\n    launch_digest: \"{digest.hex()}\"\n    metadata:\n"
        f"      sev_es_reset_eip: \"{metadata.sev_es_reset_eip:#x}\"\n"
        f"      kernel_hashes_table_gpa: \"{metadata.kernel_hashes_table_gpa:#x}\"\n"
        f"      sections:\n{sections}\n"
        f"  kernel_sha256: \"{inputs['kernel_sha256']}\"\n"
        f"  initrd_sha256: \"{inputs['initrd_sha256']}\"\n"
        f"  cmdline_sha256: \"{inputs['cmdline_sha256']}\"\n")
    assert _measure(d / "hashes.yaml").measurement == expected


def test_write_records_then_check_passes(launch_files: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = launch_files / "launch.yaml"
    config.write_text("# keep this comment\n" + config.read_text())
    assert main(["attestation", "measure", str(config), "--check"]) == 1
    assert main(["attestation", "measure", str(config), "--write"]) == 0
    text = config.read_text()
    assert text.startswith("# keep this comment\n") and "expected:\n  measurement: " in text
    assert main(["attestation", "measure", str(config), "--check"]) == 0
    stale = text.replace(text.split("measurement: \"")[1][:4], "0000", 1)
    config.write_text(stale)
    assert main(["attestation", "measure", str(config)]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main(["attestation", "measure", str(config), "--write"]) == 0
    assert config.read_text() == text
    capsys.readouterr()
    assert main(["attestation", "measure", str(config)]) == 0
    assert "sev_es_reset_eip: \"0x80b004\"" in capsys.readouterr().out


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("  vcpus: 1\n", "  vcpus: 1\n  colour: blue\n"),
     r"bad\.yaml:10:\d+: unknown key 'colour'"),
    (lambda t: t.replace("  vcpus: 1\n", "  vcpus: 1\n  vcpus: 2\n"),
     r"bad\.yaml:10:3: duplicate key 'vcpus'"),
    (lambda t: t.replace("69d0cd7d", "69d0cd"), "kernel_sha256 must be 32 bytes"),
    (lambda t: t.replace("vcpu_type: EPYC-v4", "vcpu_type: EPYC-v9"), "unknown vcpu_type"),
    (lambda t: t.replace("  vcpus: 1\n", "  vcpus: [1\n"), ".yaml:"),
    (lambda t: t.replace("kernel_sha256: \"69d0", "kernel: missing.bin\n  x: \"69d0"),
     "unknown key 'x'"),
])
def test_bad_configs_are_policy_errors_with_positions(tmp_path: Path, edit: object,
                                                       message: str) -> None:
    path = tmp_path / "bad.yaml"
    assert callable(edit)
    path.write_text(edit(EXAMPLE.read_text()))
    with pytest.raises(PolicyError, match=message):
        _measure(path)


def test_missing_files_and_cli_errors_exit_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "launch.yaml"
    path.write_text("platform: sev-snp\nsev_snp:\n  vcpus: 1\n  vcpu_type: EPYC-v4\n"
                    "  ovmf: {file: nowhere.fd}\n")
    with pytest.raises(PolicyError, match=r"launch\.yaml:5:\d+: OVMF .*nowhere\.fd"):
        _measure(path)
    assert main(["attestation", "measure", str(path)]) == 2
    assert main(["attestation", "measure", str(tmp_path / "absent.yaml")]) == 2
    path.write_text("platform: sev-snp\nsev_snp: {vcpus: 1, vcpu_type: EPYC-v4,\n")
    assert main(["attestation", "measure", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("ao-appliance: error:") == 3


def test_tdx_values_are_recorded_not_computed(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tdx.yaml"
    path.write_text(f"platform: tdx\ntdx:\n  source: \"measured boot, host A\"\n"
                    f"  mrtd: \"{'ab' * 48}\"\n  rtmrs: {{0: \"{'cd' * 48}\"}}\n")
    result = _measure(path)
    assert not result.computed and result.measurement == bytes([0xAB]) * 48
    assert result.rtmrs == {0: bytes([0xCD]) * 48}
    assert main(["attestation", "measure", str(path), "--check"]) == 0
    assert main(["attestation", "measure", str(path), "--write"]) == 2
    assert "recorded by hand" in capsys.readouterr().err
    path.write_text(f"platform: tdx\ntdx:\n  mrtd: \"{'ab' * 48}\"\n")
    with pytest.raises(PolicyError, match="source"):
        _measure(path)


def test_policy_example_loads() -> None:
    text = (CONFIGS / "policy.example.yaml").read_text()
    policy = load_policy(text, "policy.example.yaml")
    assert bytes.fromhex(HB_REPORT_MEASUREMENT) in policy.allowed_measurements
    assert not policy.snp.allow_debug and not policy.snp.allow_smt
    assert policy.snp.minimum_tcb["snp"] == 22
