"""The emulated TEE: SNP-layout reports signed by a software root made once per installation.

It exists so the node runs (and its tests run) where no confidential VM is available. Every name
in its certificates carries ``EMULATED — NOT A TEE`` and every verifier refuses its evidence unless
told ``allow_emulated=True``: it proves nothing about hardware.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation.atomic import write_atomically
from attestation.errors import ProviderError
from attestation.evidence import REPORT_DATA_SIZE, Evidence, Platform
from attestation.snp.report import SIGNED_LENGTH, SnpReport, encode_report, encode_signature
from attestation.snp.verify import EMULATED_MARKER

EMULATED_MEASUREMENT = hashlib.sha384(b"ao-appliance/emulated-measurement/v1").digest()
_ROOT_NAME = f"ao-appliance Root {EMULATED_MARKER}"
_LEAF_NAME = f"ao-appliance VCEK {EMULATED_MARKER}"
_VALIDITY = timedelta(days=3650)
_GUEST_POLICY = (1 << 17) | (1 << 16)  # reserved-must-be-one, SMT allowed; debug/migration off


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, EMULATED_MARKER),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
                 signer: ec.EllipticCurvePrivateKey, now: datetime, ca: bool) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA384())
    )


class EmulatedProvider:
    """Evidence provider for the emulated TEE, keeping its root and leaf keys in ``state_dir``.

    The root's SHA-256 fingerprint (:attr:`root_sha256`) is what a verifier may pin; it changes
    only when ``state_dir`` is wiped.
    """

    platform = Platform.EMULATED

    def __init__(self, state_dir: Path, measurement: bytes = EMULATED_MEASUREMENT) -> None:
        if len(measurement) != 48:
            raise ProviderError("emulated measurement must be 48 bytes")
        self.measurement = measurement
        self._key, self._chain = self._load_or_create(state_dir)

    @staticmethod
    def _load_or_create(state_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        key_path, chain_path = state_dir / "emulated-leaf.key", state_dir / "emulated-chain.pem"
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if key_path.exists() and chain_path.exists():
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise ProviderError(f"{key_path}: not an EC private key")
                return key, chain_path.read_bytes()
            now = datetime.now(UTC)
            root_key = ec.generate_private_key(ec.SECP384R1())
            leaf_key = ec.generate_private_key(ec.SECP384R1())
            root = _certificate(_ROOT_NAME, root_key, _ROOT_NAME, root_key, now, ca=True)
            leaf = _certificate(_LEAF_NAME, leaf_key, _ROOT_NAME, root_key, now, ca=False)
            chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
            write_atomically(key_path, leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            write_atomically(chain_path, chain)
            return leaf_key, chain
        except (OSError, ValueError) as exc:
            raise ProviderError(f"emulated TEE state in {state_dir}: {exc}") from exc

    @property
    def root_sha256(self) -> bytes:
        """SHA-256 of the emulated root certificate's DER encoding."""
        root = x509.load_pem_x509_certificates(self._chain)[-1]
        return hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).digest()

    def get_evidence(self, report_data: bytes) -> Evidence:
        """An SNP-layout version 3 report over ``report_data``, signed by the emulated leaf."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ProviderError(f"report_data must be {REPORT_DATA_SIZE} bytes")
        unsigned = SnpReport(
            version=3, guest_svn=0, policy=_GUEST_POLICY, family_id=bytes(16), image_id=bytes(16),
            vmpl=0, signature_algo=1, current_tcb=0, platform_info=0, signer_info=0,
            report_data=report_data, measurement=self.measurement, host_data=bytes(32),
            id_key_digest=bytes(48), author_key_digest=bytes(48), report_id=bytes(32),
            report_id_ma=b"\xff" * 32, reported_tcb=0, chip_id=bytes(64), committed_tcb=0,
            current_build=0, current_minor=0, current_major=0, committed_build=0,
            committed_minor=0, committed_major=0, launch_tcb=0, signature=bytes(512),
        )
        body = encode_report(unsigned)[:SIGNED_LENGTH]
        r, s = decode_dss_signature(self._key.sign(body, ec.ECDSA(hashes.SHA384())))
        return Evidence(Platform.EMULATED, body + encode_signature(r, s), (self._chain,))
