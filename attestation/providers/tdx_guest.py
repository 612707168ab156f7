"""TDX evidence through ``/dev/tdx_guest``: TDREPORT via ``TDX_CMD_GET_REPORT0``, then a quote.

Upstream Linux only offers quotes through configfs-tsm; the ``TDX_CMD_GET_QUOTE`` ioctl used here
exists in vendor kernels (same layout as google/go-tdx-guest uses). Where it is missing, the error
says to use configfs-tsm.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from attestation.errors import ProviderError
from attestation.evidence import REPORT_DATA_SIZE, Evidence, Platform
from attestation.providers.ioctl import address, buffer, iowr

DEVICE = Path("/dev/tdx_guest")
TD_REPORT_SIZE = 1024
TDX_CMD_GET_REPORT0 = iowr("T", 1, REPORT_DATA_SIZE + TD_REPORT_SIZE)
_QUOTE_REQ = struct.Struct("<QQ")  # buffer address, length
TDX_CMD_GET_QUOTE = iowr("T", 2, _QUOTE_REQ.size)
_QUOTE_HDR = struct.Struct("<QQII")  # version, status, in_len, out_len
_QUOTE_DATA = 16 * 1024
_STATUS = {0xFFFFFFFFFFFFFFFF: "quote request still in flight",
           0x8000000000000001: "quote generation service unavailable"}


class TdxGuestProvider:
    """Evidence provider using the ``/dev/tdx_guest`` ioctls."""

    platform = Platform.TDX

    def __init__(self, device: Path = DEVICE) -> None:
        self.device = device

    def get_evidence(self, report_data: bytes) -> Evidence:
        """A TDX quote over ``report_data`` (TDREPORT first, then the host's quoting service)."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ProviderError(f"report_data must be {REPORT_DATA_SIZE} bytes")
        try:
            fd = os.open(self.device, os.O_RDWR)
        except OSError as exc:
            raise ProviderError(f"cannot open {self.device}: {exc.strerror}") from exc
        try:
            report_req = bytearray(report_data + bytes(TD_REPORT_SIZE))
            fcntl.ioctl(fd, TDX_CMD_GET_REPORT0, report_req)
            quote = buffer(_QUOTE_HDR.size + _QUOTE_DATA,
                           _QUOTE_HDR.pack(1, 0, TD_REPORT_SIZE, 0) + report_req[REPORT_DATA_SIZE:])
            request = bytearray(_QUOTE_REQ.pack(address(quote), _QUOTE_DATA))
            fcntl.ioctl(fd, TDX_CMD_GET_QUOTE, request)
        except OSError as exc:
            hint = (" (this kernel has no TDX_CMD_GET_QUOTE: use configfs-tsm, Linux >= 6.7)"
                    if exc.errno in (errno.ENOTTY, errno.EINVAL) else "")
            raise ProviderError(f"{self.device}: {exc.strerror}{hint}") from exc
        finally:
            os.close(fd)
        _, status, _, out_len = _QUOTE_HDR.unpack_from(bytes(quote))
        if status != 0:
            raise ProviderError(f"TDX quote failed: {_STATUS.get(status, hex(status))}")
        if not 0 < out_len <= _QUOTE_DATA:
            raise ProviderError(f"TDX quote size {out_len} out of range")
        return Evidence(Platform.TDX, bytes(quote)[_QUOTE_HDR.size:_QUOTE_HDR.size + out_len])
