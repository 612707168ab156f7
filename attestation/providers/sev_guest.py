"""SEV-SNP evidence through ``/dev/sev-guest`` (``SNP_GET_EXT_REPORT``, linux/sev-guest.h).

Used when configfs-tsm is unavailable (kernels before 6.7). The extended request returns the
report and the certificate table the host provisioned (VCEK/VLEK, ASK, ARK).
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from attestation.errors import MalformedEvidence, ProviderError
from attestation.evidence import REPORT_DATA_SIZE, Evidence, Platform
from attestation.providers.ioctl import address, buffer, iowr
from attestation.snp.certtable import parse_cert_table
from attestation.snp.report import REPORT_SIZE

DEVICE = Path("/dev/sev-guest")
_GUEST_REQUEST = struct.Struct("<B7xQQQ")  # msg_version, req_data, resp_data, exitinfo2
SNP_GET_EXT_REPORT = iowr("S", 0x2, _GUEST_REQUEST.size)
_RESPONSE_SIZE = 4000
_REPORT_REQ = struct.Struct("<64sI28x")  # user_data, vmpl
_EXT_REQ = struct.Struct("<96sQI4x")  # report request, certs_address, certs_len
_RESP_HEAD = struct.Struct("<II24x")  # status, report_size
_VMM_INVALID_LEN = 1
_MAX_CERT_BYTES = 1 << 20


class SevGuestProvider:
    """Evidence provider using the ``/dev/sev-guest`` extended-report ioctl at VMPL 0."""

    platform = Platform.SEV_SNP

    def __init__(self, device: Path = DEVICE) -> None:
        self.device = device

    def _request(self, fd: int, report_data: bytes, certs_len: int) -> tuple[bytes, bytes, int]:
        certs = buffer(certs_len)
        response = buffer(_RESPONSE_SIZE)
        request = buffer(_EXT_REQ.size, _EXT_REQ.pack(
            _REPORT_REQ.pack(report_data, 0), address(certs), certs_len))
        arg = bytearray(_GUEST_REQUEST.pack(1, address(request), address(response), 0))
        try:
            fcntl.ioctl(fd, SNP_GET_EXT_REPORT, arg)
        except OSError as exc:
            exitinfo2 = _GUEST_REQUEST.unpack(bytes(arg))[3]
            if exitinfo2 >> 32 == _VMM_INVALID_LEN:
                needed = _EXT_REQ.unpack(bytes(request))[2]
                return b"", b"", needed
            raise ProviderError(
                f"SNP_GET_EXT_REPORT on {self.device}: {exc.strerror} "
                f"(firmware/VMM error 0x{exitinfo2:x})") from exc
        return bytes(response), bytes(certs), 0

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Request an extended report binding ``report_data``."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ProviderError(f"report_data must be {REPORT_DATA_SIZE} bytes")
        try:
            fd = os.open(self.device, os.O_RDWR)
        except OSError as exc:
            raise ProviderError(f"cannot open {self.device}: {exc.strerror}") from exc
        try:
            response, table, needed = self._request(fd, report_data, 4 * 4096)
            if needed:
                if needed > _MAX_CERT_BYTES:
                    raise ProviderError(f"host certificate table of {needed} bytes is too large")
                response, table, _ = self._request(fd, report_data, needed)
        finally:
            os.close(fd)
        status, size = _RESP_HEAD.unpack_from(response)
        if status != 0 or size != REPORT_SIZE:
            raise ProviderError(f"SNP firmware returned status {status}, report size {size}")
        report = response[_RESP_HEAD.size:_RESP_HEAD.size + size]
        try:
            certificates = tuple(parse_cert_table(table).values()) if any(table) else ()
        except MalformedEvidence as exc:
            raise ProviderError(f"host certificate table: {exc}") from exc
        return Evidence(Platform.SEV_SNP, report, certificates)
