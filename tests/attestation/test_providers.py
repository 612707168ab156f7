"""Evidence providers: the emulated TEE end to end, configfs-tsm logic, detection, cert tables."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.ao import items
from appliance.node.attest import make_attestation
from appliance.node.chain import report_data
from appliance.node.identity import NodeIdentity
from attestation.errors import EmulatedEvidenceRefused, MalformedEvidence, ProviderError
from attestation.evidence import Platform
from attestation.policy import Policy
from attestation.providers import EmulatedProvider, detect, provider_for
from attestation.providers.emulated import EMULATED_MEASUREMENT
from attestation.providers.tsm import ConfigfsTsmProvider
from attestation.snp.certtable import build_cert_table, parse_cert_table
from attestation.snp.verify import verify_emulated

ANY = Policy(any_measurement=True)


def test_emulated_evidence_verifies_only_when_allowed(tmp_path: Path) -> None:
    provider = EmulatedProvider(tmp_path)
    evidence = provider.get_evidence(b"\x07" * 64)
    assert evidence.platform is Platform.EMULATED
    now = datetime.now(UTC)
    with pytest.raises(EmulatedEvidenceRefused):
        verify_emulated(evidence.raw, evidence.certificates, ANY, now)
    verified = verify_emulated(evidence.raw, evidence.certificates,
                               Policy(allowed_measurements=frozenset({EMULATED_MEASUREMENT})),
                               now, allow_emulated=True, expected_root_sha256=provider.root_sha256)
    assert verified.report_data == b"\x07" * 64
    assert verified.measurement == EMULATED_MEASUREMENT
    assert not verified.debug


def test_emulated_root_persists_per_installation(tmp_path: Path) -> None:
    first = EmulatedProvider(tmp_path).root_sha256
    assert EmulatedProvider(tmp_path).root_sha256 == first
    assert EmulatedProvider(tmp_path / "other").root_sha256 != first
    assert (tmp_path / "emulated-leaf.key").stat().st_mode & 0o777 == 0o600


def test_emulated_evidence_from_another_installation_fails_the_pin(tmp_path: Path) -> None:
    evidence = EmulatedProvider(tmp_path / "a").get_evidence(bytes(64))
    with pytest.raises(Exception, match="EMU-4"):
        verify_emulated(evidence.raw, evidence.certificates, ANY, datetime.now(UTC),
                        allow_emulated=True,
                        expected_root_sha256=EmulatedProvider(tmp_path / "b").root_sha256)


def test_attestation_item_binds_node_key_config_and_nonce(tmp_path: Path) -> None:
    identity = NodeIdentity.load_or_create(tmp_path / "node")
    digest, nonce = hashlib.sha256(b"config").digest(), b"caller nonce"
    item = items.parse_verified(
        make_attestation(identity, EmulatedProvider(tmp_path / "tee"), digest, nonce).raw, 1 << 20)
    body = json.loads(item.data)
    assert body["platform"] == "emulated" and items.first_tag(item, "TEE-Platform") == "emulated"
    expected = report_data(identity.public_key, digest, nonce)
    certs = [c.encode() for c in body["certificates"]]
    verify_emulated(base64.b64decode(body["evidence"]), certs,
                    Policy(any_measurement=True, expected_report_data=expected),
                    datetime.now(UTC), allow_emulated=True)
    with pytest.raises(Exception, match="EMU-14"):
        verify_emulated(base64.b64decode(body["evidence"]), certs,
                        Policy(any_measurement=True,
                               expected_report_data=report_data(identity.public_key, digest, b"x")),
                        datetime.now(UTC), allow_emulated=True)


def test_bad_report_data_length_is_a_provider_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="64 bytes"):
        EmulatedProvider(tmp_path).get_evidence(b"short")


def test_provider_for_names(tmp_path: Path) -> None:
    assert isinstance(provider_for("emulated", tmp_path), EmulatedProvider)
    with pytest.raises(ProviderError, match="unknown TEE"):
        provider_for("sgx", tmp_path)
    if detect() is None:
        assert provider_for("auto", tmp_path, tsm_dir=tmp_path / "no-tsm") is None
        with pytest.raises(ProviderError, match="not a sev-snp guest"):
            provider_for("sev-snp", tmp_path, tsm_dir=tmp_path / "no-tsm")


def test_detect_reads_cpu_flags_and_devices(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    none = tmp_path / "absent"
    cpuinfo.write_text("processor : 0\nflags : fpu sse tdx_guest\n")
    assert detect(none, cpuinfo, none, none) is Platform.TDX
    cpuinfo.write_text("flags : fpu sev sev_es sev_snp\n")
    assert detect(none, cpuinfo, none, none) is Platform.SEV_SNP
    cpuinfo.write_text("flags : fpu\n")
    assert detect(none, cpuinfo, none, none) is None
    device = tmp_path / "sev-guest"
    device.touch()
    assert detect(none, cpuinfo, device, none) is Platform.SEV_SNP


def _tsm_entry(base: Path, provider: str) -> Path:
    entry = base / "ao-appliance"
    entry.mkdir(parents=True)
    (entry / "provider").write_text(provider + "\n")
    (entry / "generation").write_text("4\n")
    (entry / "outblob").write_bytes(b"R" * 1184)
    (entry / "auxblob").write_bytes(build_cert_table({"VCEK": b"v" * 10, "ASK": b"a", "ARK": b"r"}))
    return entry


def test_configfs_tsm_detects_a_concurrent_writer(tmp_path: Path) -> None:
    _tsm_entry(tmp_path, "sev_guest")
    provider = ConfigfsTsmProvider(tmp_path)
    assert provider.platform is Platform.SEV_SNP
    with pytest.raises(ProviderError, match="concurrently"):
        provider.get_evidence(bytes(64))  # a plain directory never bumps "generation"


def test_configfs_tsm_refuses_unknown_provider(tmp_path: Path) -> None:
    _tsm_entry(tmp_path, "arm_cca_guest")
    with pytest.raises(ProviderError, match="not supported"):
        ConfigfsTsmProvider(tmp_path)


def test_cert_table_round_trip_and_bounds() -> None:
    blobs = {"VCEK": b"vcek-der", "ASK": b"ask-der", "ARK": b"ark-der"}
    assert parse_cert_table(build_cert_table(blobs) + bytes(100)) == blobs
    table = bytearray(build_cert_table(blobs))
    table[20:24] = (10_000).to_bytes(4, "little")
    with pytest.raises(MalformedEvidence, match="outside"):
        parse_cert_table(bytes(table))
    with pytest.raises(MalformedEvidence, match="terminating"):
        parse_cert_table(b"\x01" * 10)
