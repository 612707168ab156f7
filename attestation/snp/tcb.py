"""TCB_VERSION decoding (SEV-SNP ABI "TCB_VERSION"); Turin inserts an FMC byte and moves fields."""

from __future__ import annotations

COMPONENTS = ("bootloader", "tee", "snp", "microcode")
TURIN_COMPONENTS = ("fmc", *COMPONENTS)

_BYTE_INDEX = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
_TURIN_BYTE_INDEX = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}

VCEK_TCB_OIDS = {
    "bootloader": "1.3.6.1.4.1.3704.1.3.1",
    "tee": "1.3.6.1.4.1.3704.1.3.2",
    "snp": "1.3.6.1.4.1.3704.1.3.3",
    "microcode": "1.3.6.1.4.1.3704.1.3.8",
    "fmc": "1.3.6.1.4.1.3704.1.3.9",
}
"""AMD X.509 extensions carrying the TCB a VCEK was derived for."""


def decode_tcb(value: int, product: str) -> dict[str, int]:
    """Split a 64-bit TCB_VERSION into named components using ``product``'s layout."""
    raw = value.to_bytes(8, "little")
    index = _TURIN_BYTE_INDEX if product == "Turin" else _BYTE_INDEX
    return {name: raw[i] for name, i in index.items()}
