"""The Intel TDX ECDSA quote, versions 4 and 5 (Intel TDX DCAP Quoting Library API, Appendix A).

Parsing follows the declared lengths: the quote ends where its signature data length says it
ends, and every nested length must fit exactly inside its container. Bytes after the signature
data are not part of the quote (quote buffers from real quote-generation paths are padded; Intel's
QVL, go-tdx-guest and dcap-qvl ignore them too): they are counted in ``TdxQuote.trailing_bytes``,
covered by no signature, and never read. Only ECDSA-256-with-P-256 attestation keys with QE report
certification data (type 6) wrapping a PCK certificate chain (type 5) are accepted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from attestation.errors import MalformedEvidence

HEADER_SIZE = 48
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
QE_REPORT_SIZE = 384
ECDSA_SIZE = 64
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
BODY_TD_REPORT10 = 2
BODY_TD_REPORT15 = 3
MAX_QUOTE_SIZE = 1 << 20

_HEADER = struct.Struct("<HHIHH16s20s")
_TD10 = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
_TD15_EXTRA = struct.Struct("<16s48s")
_QE_REPORT = struct.Struct("<16sI28s16s32s32s32s96sHH60s64s")
_BODY_SIZE = {BODY_TD_REPORT10: TD_REPORT10_SIZE, BODY_TD_REPORT15: TD_REPORT15_SIZE}


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header (Appendix A.3.1 / A.4.1)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class TdReportBody:
    """The TD quote body: TD report 1.0 (584 bytes) or 1.5 (adds TEE_TCB_SVN_2, MRSERVICETD)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES bit 0, DEBUG (TUD.DEBUG)."""
        return bool(self.td_attributes[0] & 1)

    @property
    def sept_ve_disable(self) -> bool:
        """TDATTRIBUTES bit 28, SEPT_VE_DISABLE: EPT violations cannot be turned into #VE."""
        return bool(int.from_bytes(self.td_attributes, "little") >> 28 & 1)


@dataclass(frozen=True)
class QeReport:
    """The Quoting Enclave's SGX REPORT body (384 bytes), signed by the PCK key."""

    raw: bytes
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True)
class TdxQuote:
    """A parsed quote. ``signed`` is the exact byte range the attestation key signed;
    ``trailing_bytes`` counts the unsigned bytes that followed the signature data."""

    header: QuoteHeader
    body_type: int
    body: TdReportBody
    signed: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: QeReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    trailing_bytes: int = 0


class _Reader:
    def __init__(self, data: bytes, start: int, end: int, what: str) -> None:
        self.data, self.pos, self.end, self.what = data, start, end, what

    def take(self, size: int, field: str) -> bytes:
        if size > self.end - self.pos:
            raise MalformedEvidence(
                f"TDX quote: {self.what} truncated reading {field} ({size} bytes at offset "
                f"{self.pos}, {self.end - self.pos} left)")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def u16(self, field: str) -> int:
        value: int = struct.unpack("<H", self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = struct.unpack("<I", self.take(4, field))[0]
        return value

    def finish(self) -> None:
        if self.pos != self.end:
            raise MalformedEvidence(
                f"TDX quote: {self.end - self.pos} unexpected bytes after {self.what}")


def _header(data: bytes) -> QuoteHeader:
    header = QuoteHeader(*_HEADER.unpack_from(data, 0))
    if header.version not in (4, 5):
        raise MalformedEvidence(f"TDX quote: version {header.version}, expected 4 or 5")
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise MalformedEvidence(f"TDX quote: attestation key type {header.att_key_type}, "
                                "expected 2 (ECDSA-256-with-P-256)")
    if header.tee_type != TEE_TYPE_TDX:
        raise MalformedEvidence(f"TDX quote: TEE type {header.tee_type:#x}, expected 0x81 (TDX)")
    return header


def _body(raw: bytes, body_type: int) -> TdReportBody:
    f = _TD10.unpack_from(raw, 0)
    extra: tuple[bytes | None, bytes | None] = (None, None)
    if body_type == BODY_TD_REPORT15:
        extra = _TD15_EXTRA.unpack_from(raw, TD_REPORT10_SIZE)
    return TdReportBody(
        tee_tcb_svn=f[0], mr_seam=f[1], mr_signer_seam=f[2], seam_attributes=f[3],
        td_attributes=f[4], xfam=f[5], mr_td=f[6], mr_config_id=f[7], mr_owner=f[8],
        mr_owner_config=f[9], rtmrs=(f[10], f[11], f[12], f[13]), report_data=f[14],
        tee_tcb_svn2=extra[0], mr_service_td=extra[1],
    )  # fmt: skip


def parse_qe_report(raw: bytes) -> QeReport:
    """Parse a 384-byte SGX REPORT body (Intel SGX SDM, REPORTBODY)."""
    if len(raw) != QE_REPORT_SIZE:
        raise MalformedEvidence(f"QE report: {len(raw)} bytes, expected {QE_REPORT_SIZE}")
    f = _QE_REPORT.unpack(raw)
    return QeReport(raw=bytes(raw), cpu_svn=f[0], misc_select=f[1], attributes=f[3],
                    mr_enclave=f[4], mr_signer=f[6], isv_prod_id=f[8], isv_svn=f[9],
                    report_data=f[11])


def parse_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote v4 or v5 (body type 2 or 3) by its declared lengths.

    MalformedEvidence when a length runs past its container or a field is unsupported; bytes
    after the signature data are counted, not parsed (``trailing_bytes``).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEvidence("TDX quote: expected bytes")
    data = bytes(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise MalformedEvidence(f"TDX quote: {len(data)} bytes exceeds {MAX_QUOTE_SIZE}")
    top = _Reader(data, 0, len(data), "the quote")
    header = _header(top.take(HEADER_SIZE, "header"))
    if header.version == 4:
        body_type = BODY_TD_REPORT10
    else:
        body_type = top.u16("body type")
        if body_type not in _BODY_SIZE:
            raise MalformedEvidence(f"TDX quote v5: body type {body_type}, expected 2 or 3 "
                                    "(TD report 1.0 / 1.5)")
        body_size = top.u32("body size")
        if body_size != _BODY_SIZE[body_type]:
            raise MalformedEvidence(f"TDX quote v5: body size {body_size} for type {body_type}, "
                                    f"expected {_BODY_SIZE[body_type]}")
    body = _body(top.take(_BODY_SIZE[body_type], "TD report body"), body_type)
    signed = data[:top.pos]
    sig_len = top.u32("signature data length")
    if sig_len > len(data) - top.pos:
        raise MalformedEvidence(f"TDX quote: signature data length {sig_len} but only "
                                f"{len(data) - top.pos} bytes follow")
    sig = _Reader(data, top.pos, top.pos + sig_len, "the signature data")
    signature = sig.take(ECDSA_SIZE, "quote signature")
    attestation_key = sig.take(ECDSA_SIZE, "attestation key")
    cert_type = sig.u16("certification data type")
    if cert_type != CERT_TYPE_QE_REPORT:
        raise MalformedEvidence(f"TDX quote: certification data type {cert_type}, expected 6 "
                                "(QE report certification data)")
    cert_size = sig.u32("certification data size")
    outer = _Reader(data, sig.pos, sig.pos + cert_size, "the QE report certification data")
    sig.take(cert_size, "certification data")
    sig.finish()
    qe_report = parse_qe_report(outer.take(QE_REPORT_SIZE, "QE report"))
    qe_report_signature = outer.take(ECDSA_SIZE, "QE report signature")
    qe_auth_data = outer.take(outer.u16("QE auth data size"), "QE auth data")
    inner_type = outer.u16("PCK certification data type")
    if inner_type != CERT_TYPE_PCK_CHAIN:
        raise MalformedEvidence(f"TDX quote: inner certification data type {inner_type}, "
                                "expected 5 (PCK certificate chain)")
    pck_chain = outer.take(outer.u32("PCK certification data size"), "PCK certificate chain")
    outer.finish()
    return TdxQuote(
        header=header, body_type=body_type, body=body, signed=signed, signature=signature,
        attestation_key=attestation_key, qe_report=qe_report,
        qe_report_signature=qe_report_signature, qe_auth_data=qe_auth_data,
        pck_chain_pem=pck_chain, trailing_bytes=len(data) - sig.end,
    )
