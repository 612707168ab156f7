"""Evidence through configfs-tsm (Linux >= 6.7): SEV-SNP reports and TDX quotes alike.

One report entry directory is reused for every request (``systemd/tsm-report-entry.sh`` creates
``/sys/kernel/config/tsm/report/ao-appliance`` for the service user). The ``generation`` counter is
read before writing ``inblob`` and after reading ``outblob``; any other writer in between makes the
request fail instead of returning somebody else's report.
"""

from __future__ import annotations

import errno
from pathlib import Path

from attestation.errors import MalformedEvidence, ProviderError
from attestation.evidence import REPORT_DATA_SIZE, Evidence, Platform
from attestation.snp.certtable import parse_cert_table

TSM_REPORT_DIR = Path("/sys/kernel/config/tsm/report")
ENTRY_NAME = "ao-appliance"
MAX_BLOB_BYTES = 1 << 20
_PROVIDERS = {"sev_guest": Platform.SEV_SNP, "tdx_guest": Platform.TDX}


class ConfigfsTsmProvider:
    """Evidence provider backed by a configfs-tsm report entry."""

    def __init__(self, base: Path = TSM_REPORT_DIR, entry: str = ENTRY_NAME) -> None:
        self.entry = base / entry
        try:
            self.entry.mkdir(exist_ok=True)
            name = (self.entry / "provider").read_text().strip()
        except OSError as exc:
            raise ProviderError(f"configfs-tsm entry {self.entry}: {exc.strerror or exc}") from exc
        if name not in _PROVIDERS:
            raise ProviderError(f"configfs-tsm provider {name!r} is not supported")
        self.platform = _PROVIDERS[name]

    def _generation(self) -> int:
        return int((self.entry / "generation").read_text().strip())

    def _read(self, name: str) -> bytes:
        with open(self.entry / name, "rb") as handle:
            data = handle.read(MAX_BLOB_BYTES + 1)
        if len(data) > MAX_BLOB_BYTES:
            raise ProviderError(f"configfs-tsm {name} exceeds {MAX_BLOB_BYTES} bytes")
        return data

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Write ``report_data`` to inblob; return outblob (and auxblob certificates for SNP)."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise ProviderError(f"report_data must be {REPORT_DATA_SIZE} bytes")
        try:
            before = self._generation()
            with open(self.entry / "inblob", "wb") as handle:
                handle.write(report_data)
            raw = self._read("outblob")
            aux = self._read("auxblob") if self.platform is Platform.SEV_SNP else b""
            after = self._generation()
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise ProviderError("configfs-tsm entry busy (another writer)") from exc
            raise ProviderError(f"configfs-tsm {self.entry}: {exc.strerror or exc}") from exc
        if after != before + 1:
            raise ProviderError(
                f"configfs-tsm generation moved from {before} to {after}: another process used "
                f"{self.entry} concurrently; retry")
        try:
            certificates = tuple(parse_cert_table(aux).values()) if aux else ()
        except MalformedEvidence as exc:
            raise ProviderError(f"configfs-tsm auxblob: {exc}") from exc
        return Evidence(self.platform, raw, certificates)
