"""A test-only PKI shaped like AMD's (ARK → ASK → VCEK, RSA-PSS SHA-384 salt 48), reports signed
in it and ARK-signed CRLs, for the SNP revocation step (no real AMD CRL can be made for a test).
The verifier is handed this ARK's and ASK's fingerprints in place of the pinned Milan ones.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation.policy import Policy, SnpPolicy
from attestation.snp import verify as snp_verify
from attestation.snp.certs import sha256_fingerprint
from attestation.snp.report import SIGNED_LENGTH, SnpReport, encode_report, encode_signature

NOW = datetime(2025, 1, 1, tzinfo=UTC)
ANY = Policy(any_measurement=True, snp=SnpPolicy())
CHIP_ID = bytes(range(64))
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_HWID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Only")])


def _cert(cn: str, key: Any, issuer: x509.Name, signer: rsa.RSAPrivateKey, *, ca: bool,
          hwid: bytes | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
               .not_valid_after(datetime(2035, 1, 1, tzinfo=UTC))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hwid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(_HWID_OID, hwid),
                                        critical=False)
    return builder.sign(signer, hashes.SHA384(), rsa_padding=_PSS)


class World:
    """ARK, ASK and a VCEK for :data:`CHIP_ID`; reports signed by the VCEK; CRLs by the ARK."""

    def __init__(self) -> None:
        self.ark_key = rsa.generate_private_key(65537, 2048)
        self.ark = _cert("ARK-Milan", self.ark_key, _name("ARK-Milan"), self.ark_key, ca=True)
        self.ask_key = rsa.generate_private_key(65537, 2048)
        self.ask = _cert("SEV-Milan", self.ask_key, self.ark.subject, self.ark_key, ca=True)
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())
        self.vcek = _cert("SEV-VCEK", self.vcek_key, self.ask.subject, self.ask_key, ca=False,
                          hwid=CHIP_ID)
        self.ark_pins = {"Milan": sha256_fingerprint(self.ark)}
        self.ask_pins = {("Milan", "VCEK"): sha256_fingerprint(self.ask),
                         ("Milan", "VLEK"): "none"}

    def chain(self) -> list[bytes]:
        """VCEK, ASK and ARK as DER blobs."""
        return [c.public_bytes(serialization.Encoding.DER) for c in (self.vcek, self.ask,
                                                                     self.ark)]

    def report(self) -> bytes:
        """A version 3 report (VCEK-signed, debug off) over 64 bytes of 0x5a."""
        unsigned = SnpReport(
            version=3, guest_svn=0, policy=(1 << 17) | (1 << 16), family_id=bytes(16),
            image_id=bytes(16), vmpl=0, signature_algo=1, current_tcb=0, platform_info=0,
            signer_info=0, report_data=b"\x5a" * 64, measurement=bytes(48), host_data=bytes(32),
            id_key_digest=bytes(48), author_key_digest=bytes(48), report_id=bytes(32),
            report_id_ma=b"\xff" * 32, reported_tcb=0, chip_id=CHIP_ID, committed_tcb=0,
            current_build=0, current_minor=0, current_major=0, committed_build=0,
            committed_minor=0, committed_major=0, launch_tcb=0, signature=bytes(512))
        body = encode_report(unsigned)[:SIGNED_LENGTH]
        r, s = decode_dss_signature(self.vcek_key.sign(body, ec.ECDSA(hashes.SHA384())))
        return body + encode_signature(r, s)

    def crl(self, revoked: tuple[x509.Certificate, ...] = (), *, this_update: datetime = NOW
            - timedelta(days=3), next_update: datetime = NOW + timedelta(days=4),
            signer: rsa.RSAPrivateKey | None = None, pem: bool = False) -> bytes:
        """An ARK-issued CRL (signed by ``signer``, the ARK key by default) revoking ``revoked``."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.ark.subject)
                   .last_update(this_update).next_update(next_update))
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(NOW - timedelta(days=5)).build())
        crl = builder.sign(signer or self.ark_key, hashes.SHA384(), rsa_padding=_PSS)
        return crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)

    def verify(self, crls: tuple[bytes, ...] = (), policy: Policy = ANY,
               now: datetime = NOW) -> Any:
        """Verify :meth:`report` with this PKI's anchors and ``crls``."""
        return snp_verify._verify_snp(self.report(), self.chain(), policy, now, crls,
                                      self.ark_pins, self.ask_pins)
