"""A test-only PKI shaped like Intel's (root, PCK CA, TCB signing key) and TDX quotes and
collateral signed in it, for the verifier's later steps (the real vectors stop at TDX-14) and for
the verification bench. The verifier is handed this root's fingerprint in place of the Intel pin.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation.policy import Policy
from attestation.tdx import pck
from attestation.tdx import verify as tdx_verify
from attestation.tdx.collateral import TdxCollateral
from attestation.tdx.quote import HEADER_SIZE, INTEL_QE_VENDOR_ID, TD_REPORT10_SIZE

NOW = datetime(2024, 6, 1, tzinfo=UTC)
ANY = Policy(any_measurement=True)
MRTD = bytes(range(48))
REPORT_DATA = b"\x5a" * 64
QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
FMSPC = bytes.fromhex("50806f000000")
SGX_TCB = (3, 3, 2, 2, 2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
TEE_TCB_SVN = bytes([3, 0, 4] + [0] * 13)
_SGX_OID = [1, 2, 840, 113741, 1, 13, 1]


def _der(tag: int, value: bytes) -> bytes:
    if len(value) < 0x80:
        return bytes([tag, len(value)]) + value
    size = len(value).to_bytes((len(value).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _oid(arcs: list[int]) -> bytes:
    body = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        rest = arc >> 7
        chunk = [arc & 0x7F]
        while rest:
            chunk.append(0x80 | rest & 0x7F)
            rest >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, body)


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big"))


def _pair(arcs: list[int], value: bytes) -> bytes:
    return _der(0x30, _oid(arcs) + value)


def sgx_extension(fmspc: bytes, components: tuple[int, ...], pce_svn: int,
                  pce_id: bytes = b"\0\0") -> bytes:
    """DER of the SGX extension with PPID, TCB, PCE-ID, FMSPC and SGX type."""
    tcb = b"".join(_pair([*_SGX_OID, 2, i + 1], _int(svn)) for i, svn in enumerate(components))
    tcb += _pair([*_SGX_OID, 2, 17], _int(pce_svn))
    tcb += _pair([*_SGX_OID, 2, 18], _der(0x04, bytes(components)))
    return _der(0x30, _pair([*_SGX_OID, 1], _der(0x04, bytes(16)))
                + _pair([*_SGX_OID, 2], _der(0x30, tcb))
                + _pair([*_SGX_OID, 3], _der(0x04, pce_id))
                + _pair([*_SGX_OID, 4], _der(0x04, fmspc))
                + _pair([*_SGX_OID, 5], _der(0x0A, b"\x00")))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Only")])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          signer: ec.EllipticCurvePrivateKey, *, ca: bool,
          extension: bytes | None = None, not_after: datetime | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
               .not_valid_after(not_after or datetime(2035, 1, 1, tzinfo=UTC))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.840.113741.1.13.1"),
                                       extension), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _level(status: str, sgx: tuple[int, ...] = SGX_TCB, pce: int = 11,
           tdx: bytes = TEE_TCB_SVN) -> dict[str, Any]:
    return {"tcb": {"sgxtcbcomponents": [{"svn": v} for v in sgx], "pcesvn": pce,
                    "tdxtcbcomponents": [{"svn": v} for v in tdx]},
            "tcbDate": "2023-02-15T00:00:00Z", "tcbStatus": status}


@dataclass
class Knobs:
    """What a test may change about the synthetic platform and its collateral."""

    td_attributes: bytes = bytes.fromhex("0000001000000000")  # SEPT_VE_DISABLE, as real TDs
    xfam: bytes = bytes.fromhex("e71a060000000000")
    tee_tcb_svn: bytes = TEE_TCB_SVN
    seam_attributes: bytes = bytes(8)
    qe_isv_svn: int = 4
    qe_mrsigner: bytes = QE_MRSIGNER
    tcb_levels: list[dict[str, Any]] = field(default_factory=lambda: [_level("UpToDate")])
    module_identities: list[dict[str, Any]] | None = None
    qe_levels: list[dict[str, Any]] = field(default_factory=lambda: [
        {"tcb": {"isvsvn": 4}, "tcbDate": "2023-02-15T00:00:00Z", "tcbStatus": "UpToDate"}])
    fmspc: bytes = FMSPC
    revoke_leaf: bool = False
    revoke_ca: bool = False
    revoke_signer: bool = False
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID


class World:
    """A test PKI shaped like Intel's, and quotes/collateral signed in it."""

    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert(pck.ROOT_CN, self.root_key, _name(pck.ROOT_CN), self.root_key, ca=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("Intel SGX PCK Platform CA", self.ca_key, self.root.subject,
                        self.root_key, ca=True)
        self.signer_key = ec.generate_private_key(ec.SECP256R1())
        self.signer = _cert(pck.TCB_SIGNING_CN, self.signer_key, self.root.subject,
                            self.root_key, ca=False)
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = _cert(pck.PCK_CN, self.leaf_key, self.ca.subject, self.ca_key, ca=False,
                          extension=sgx_extension(FMSPC, SGX_TCB, 11))
        self.att_key = ec.generate_private_key(ec.SECP256R1())
        self.pin = pck.fingerprint(self.root)

    def quote(self, k: Knobs, version: int = 4) -> bytes:
        header = struct.pack("<HHIHH16s20s", version, 2, 0x81, 0, 0, k.qe_vendor_id, bytes(20))
        body = (k.tee_tcb_svn + bytes(48) + bytes(48) + k.seam_attributes + k.td_attributes
                + k.xfam + MRTD + bytes(48 * 3) + b"".join(bytes([i]) * 48 for i in range(4))
                + REPORT_DATA)
        if version == 5:
            body = struct.pack("<HI", 2, len(body)) + body
        att = self.att_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        auth = b"\x11" * 32
        qe_report = (bytes(16) + struct.pack("<I", 0) + bytes(28) + bytes.fromhex("15" + "00" * 15)
                     + bytes(32) + bytes(32) + k.qe_mrsigner + bytes(96)
                     + struct.pack("<HH", 2, k.qe_isv_svn) + bytes(60)
                     + hashlib.sha256(att + auth).digest() + bytes(32))
        chain = _pem(self.leaf, self.ca, self.root)
        inner = (qe_report + _raw_sig(self.leaf_key, qe_report) + struct.pack("<H", len(auth))
                 + auth + struct.pack("<HI", 5, len(chain)) + chain)
        signed = header + body
        sig_data = _raw_sig(self.att_key, signed) + att + struct.pack("<HI", 6, len(inner)) + inner
        return signed + struct.pack("<I", len(sig_data)) + sig_data

    def _signed(self, key: str, value: dict[str, Any]) -> bytes:
        text = json.dumps(value, separators=(",", ":")).encode()
        sig = _raw_sig(self.signer_key, text).hex()
        return b'{"' + key.encode() + b'":' + text + b',"signature":"' + sig.encode() + b'"}'

    def _crl(self, issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey,
             revoked: list[x509.Certificate]) -> bytes:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
                   .last_update(NOW - timedelta(days=10)).next_update(NOW + timedelta(days=20))
                   .add_extension(x509.CRLNumber(1), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       key.public_key()), critical=False))
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                .revocation_date(NOW - timedelta(days=1)).build())
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def collateral(self, k: Knobs) -> TdxCollateral:
        dates = {"issueDate": "2024-05-20T00:00:00Z", "nextUpdate": "2024-06-19T00:00:00Z"}
        info: dict[str, Any] = {
            "id": "TDX", "version": 3, **dates, "fmspc": k.fmspc.hex(), "pceId": "0000",
            "tcbType": 0, "tcbEvaluationDataNumber": 17,
            "tdxModule": {"mrsigner": "00" * 48, "attributes": "00" * 8,
                          "attributesMask": "ff" * 8},
            "tcbLevels": k.tcb_levels,
        }
        if k.module_identities is not None:
            info["tdxModuleIdentities"] = k.module_identities
        identity = {
            "id": "TD_QE", "version": 2, **dates, "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": "11" + "00" * 15, "attributesMask": "FBFFFFFFFFFFFFFF" + "00" * 8,
            "mrsigner": QE_MRSIGNER.hex().upper(), "isvprodid": 2, "tcbLevels": k.qe_levels,
        }
        root_revoked = [c for c, on in ((self.ca, k.revoke_ca), (self.signer, k.revoke_signer))
                        if on]
        chain = _pem(self.signer, self.root)
        return TdxCollateral(
            tcb_infos=(self._signed("tcbInfo", info),),
            qe_identity=self._signed("enclaveIdentity", identity),
            tcb_info_issuer_chain=chain,
            qe_identity_issuer_chain=chain,
            pck_crl=self._crl(self.ca, self.ca_key, [self.leaf] if k.revoke_leaf else []),
            root_crl=self._crl(self.root, self.root_key, root_revoked),
            pck_crl_issuer_chain=_pem(self.ca, self.root),
            root_ca=_pem(self.root),
        )

    def verify(self, k: Knobs | None = None, policy: Policy = ANY, now: datetime = NOW,
               quote: bytes | None = None) -> Any:
        k = k or Knobs()
        return tdx_verify._verify(quote or self.quote(k), self.collateral(k), policy, now,
                                  self.pin)


def signed_quote_length(raw: bytes) -> int:
    """Where a quote ends by its own signature-data length (files may carry trailing bytes)."""
    end = HEADER_SIZE + TD_REPORT10_SIZE
    (sig_len,) = struct.unpack_from("<I", raw, end)
    return end + 4 + int(sig_len)
