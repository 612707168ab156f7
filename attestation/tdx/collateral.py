"""TDX collateral (Intel PCS API v4): TCB info v3 and QE identity v2 responses, CRLs.

A PCS response is ``{"tcbInfo": {...}, "signature": "<hex r||s>"}`` (or ``enclaveIdentity``);
the ECDSA P-256 SHA-256 signature covers the exact bytes of the inner value as they appear in the
response, so :func:`signed_json` keeps those bytes rather than re-serialising. Parsers are pure and
raise only :class:`MalformedEvidence`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from attestation.errors import MalformedEvidence

TCB_STATUSES = frozenset({
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked",
})
QE_TCB_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})
MAX_RESPONSE_BYTES = 1 << 20
_COMPONENTS = 16
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class TdxCollateral:
    """Everything besides the quote that TDX verification needs, as fetched from Intel PCS.

    ``tcb_infos`` holds one or more raw TCB info responses (one per FMSPC; verification uses the
    one for the PCK certificate's FMSPC); ``qe_identity`` is the raw QE identity response; the
    issuer chains are the PEM ``*-Issuer-Chain`` headers (signing certificate + Intel SGX Root CA);
    CRLs are DER or PEM. ``root_ca`` is optional: the root is pinned by fingerprint in code
    whatever is supplied.
    """

    tcb_infos: tuple[bytes, ...]
    qe_identity: bytes
    tcb_info_issuer_chain: bytes
    qe_identity_issuer_chain: bytes
    pck_crl: bytes
    root_crl: bytes
    pck_crl_issuer_chain: bytes = b""
    root_ca: bytes = b""


@dataclass(frozen=True)
class SignedJson:
    """A PCS response split into the exact signed bytes, the 64-byte signature, and the value."""

    body: bytes
    signature: bytes
    value: dict[str, Any]


@dataclass(frozen=True)
class TcbLevel:
    """One ``tcbLevels`` entry of TDX TCB info (components in index order)."""

    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...]
    tcb_date: datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class IsvLevel:
    """A TCB level keyed by one ISVSVN (QE identity and TDX module identity levels)."""

    isv_svn: int
    tcb_date: datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModule:
    """``tdxModule``: the expected MRSIGNERSEAM and SEAMATTRIBUTES (with mask)."""

    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes


@dataclass(frozen=True)
class TdxModuleIdentity:
    """One ``tdxModuleIdentities`` entry (``id`` is ``TDX_<major version, 2 hex digits>``)."""

    id: str
    module: TdxModule
    levels: tuple[IsvLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    """TDX TCB info v3 (Intel PCS API, "TDX TCB Info" v4 endpoint)."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tdx_module: TdxModule | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    levels: tuple[TcbLevel, ...]


@dataclass(frozen=True)
class QeIdentity:
    """QE identity v2 (Intel PCS API, "TDX QE Identity"); ``id`` is ``TD_QE`` for TDX."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    misc_select: int
    misc_select_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    levels: tuple[IsvLevel, ...]


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def signed_json(raw: bytes, key: str, what: str) -> SignedJson:
    """Split ``{"<key>": {...}, "signature": "<128 hex>"}`` keeping the raw bytes of ``key``."""
    if len(raw) > MAX_RESPONSE_BYTES:
        raise MalformedEvidence(f"{what}: {len(raw)} bytes exceeds {MAX_RESPONSE_BYTES}")
    try:
        text = bytes(raw).decode("utf-8")
        spans: dict[str, tuple[int, int, Any]] = {}
        pos = _skip(text, 0)
        if text[pos:pos + 1] != "{":
            raise ValueError("top level is not an object")
        pos = _skip(text, pos + 1)
        while True:
            name, pos = _DECODER.raw_decode(text, pos)
            if not isinstance(name, str) or name in spans:
                raise ValueError("bad or duplicate member name")
            pos = _skip(text, pos)
            if text[pos:pos + 1] != ":":
                raise ValueError("expected ':'")
            start = _skip(text, pos + 1)
            value, end = _DECODER.raw_decode(text, start)
            spans[name] = (start, end, value)
            pos = _skip(text, end)
            if text[pos:pos + 1] == ",":
                pos = _skip(text, pos + 1)
                continue
            if text[pos:pos + 1] != "}":
                raise ValueError("expected ',' or '}'")
            break
        if _skip(text, pos + 1) != len(text):
            raise ValueError("data after the top-level object")
    except (UnicodeDecodeError, ValueError, RecursionError, IndexError) as exc:
        raise MalformedEvidence(f"{what}: not a PCS JSON response ({exc})") from exc
    if set(spans) != {key, "signature"}:
        raise MalformedEvidence(f"{what}: members {sorted(spans)}, expected {key!r}, 'signature'")
    start, end, value = spans[key]
    if not isinstance(value, dict):
        raise MalformedEvidence(f"{what}: {key} is not an object")
    signature = _hex(spans["signature"][2], 64, f"{what} signature")
    return SignedJson(text[start:end].encode("utf-8"), signature, value)


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvidence(f"{what} must be an object")
    return value


def _get(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise MalformedEvidence(f"{what}: missing {key!r}")
    return obj[key]


def _int(value: Any, what: str, limit: int = 0xFFFFFFFF) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise MalformedEvidence(f"{what} must be an integer in 0..{limit}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedEvidence(f"{what} must be a string")
    return value


def _hex(value: Any, size: int, what: str) -> bytes:
    text = _str(value, what)
    if len(text) != 2 * size or not set(text) <= _HEX_DIGITS:
        raise MalformedEvidence(f"{what} must be {2 * size} hex digits")
    return bytes.fromhex(text)


def _date(value: Any, what: str) -> datetime:
    text = _str(value, what)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEvidence(f"{what} {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise MalformedEvidence(f"{what} {text!r} has no time zone")
    return when


def _list(value: Any, what: str, minimum: int = 0, maximum: int = 256) -> list[Any]:
    if not isinstance(value, list) or not minimum <= len(value) <= maximum:
        raise MalformedEvidence(f"{what} must be a list of {minimum}..{maximum} items")
    return value


def _status(value: Any, allowed: frozenset[str], what: str) -> str:
    status = _str(value, what)
    if status not in allowed:
        raise MalformedEvidence(f"{what} {status!r} is not one of {sorted(allowed)}")
    return status


def _advisories(level: dict[str, Any], what: str) -> tuple[str, ...]:
    if "advisoryIDs" not in level:
        return ()
    return tuple(_str(a, f"{what}.advisoryIDs") for a in _list(level["advisoryIDs"], what))


def _components(value: Any, what: str) -> tuple[int, ...]:
    items = _list(value, what, _COMPONENTS, _COMPONENTS)
    return tuple(_int(_get(_obj(c, what), "svn", what), f"{what}.svn", 255) for c in items)


def _isv_levels(value: Any, allowed: frozenset[str], what: str) -> tuple[IsvLevel, ...]:
    out = []
    for index, item in enumerate(_list(value, what, 1)):
        w = f"{what}[{index}]"
        level = _obj(item, w)
        tcb = _obj(_get(level, "tcb", w), f"{w}.tcb")
        out.append(IsvLevel(
            isv_svn=_int(_get(tcb, "isvsvn", w), f"{w}.tcb.isvsvn", 0xFFFF),
            tcb_date=_date(_get(level, "tcbDate", w), f"{w}.tcbDate"),
            status=_status(_get(level, "tcbStatus", w), allowed, f"{w}.tcbStatus"),
            advisory_ids=_advisories(level, w),
        ))
    return tuple(out)


def _module(obj: dict[str, Any], what: str) -> TdxModule:
    return TdxModule(
        mr_signer=_hex(_get(obj, "mrsigner", what), 48, f"{what}.mrsigner"),
        attributes=_hex(_get(obj, "attributes", what), 8, f"{what}.attributes"),
        attributes_mask=_hex(_get(obj, "attributesMask", what), 8, f"{what}.attributesMask"),
    )


def parse_tcb_info(value: dict[str, Any]) -> TcbInfo:
    """Validate a ``tcbInfo`` object (TDX, version 3)."""
    w = "tcbInfo"
    info = _obj(value, w)
    identity = _str(_get(info, "id", w), f"{w}.id")
    version = _int(_get(info, "version", w), f"{w}.version")
    if identity != "TDX" or version != 3:
        raise MalformedEvidence(f"{w}: id {identity!r} version {version}, expected 'TDX' v3")
    module = _module(_obj(info["tdxModule"], f"{w}.tdxModule"), f"{w}.tdxModule") \
        if "tdxModule" in info else None
    identities = []
    for index, item in enumerate(_list(info.get("tdxModuleIdentities", []), w)):
        iw = f"{w}.tdxModuleIdentities[{index}]"
        obj = _obj(item, iw)
        identities.append(TdxModuleIdentity(
            id=_str(_get(obj, "id", iw), f"{iw}.id"),
            module=_module(obj, iw),
            levels=_isv_levels(_get(obj, "tcbLevels", iw), TCB_STATUSES, f"{iw}.tcbLevels"),
        ))
    levels = []
    for index, item in enumerate(_list(_get(info, "tcbLevels", w), f"{w}.tcbLevels", 1)):
        lw = f"{w}.tcbLevels[{index}]"
        level = _obj(item, lw)
        tcb = _obj(_get(level, "tcb", lw), f"{lw}.tcb")
        levels.append(TcbLevel(
            sgx_components=_components(_get(tcb, "sgxtcbcomponents", lw),
                                       f"{lw}.tcb.sgxtcbcomponents"),
            pce_svn=_int(_get(tcb, "pcesvn", lw), f"{lw}.tcb.pcesvn", 0xFFFF),
            tdx_components=_components(_get(tcb, "tdxtcbcomponents", lw),
                                       f"{lw}.tcb.tdxtcbcomponents"),
            tcb_date=_date(_get(level, "tcbDate", lw), f"{lw}.tcbDate"),
            status=_status(_get(level, "tcbStatus", lw), TCB_STATUSES, f"{lw}.tcbStatus"),
            advisory_ids=_advisories(level, lw),
        ))
    return TcbInfo(
        id=identity,
        version=version,
        issue_date=_date(_get(info, "issueDate", w), f"{w}.issueDate"),
        next_update=_date(_get(info, "nextUpdate", w), f"{w}.nextUpdate"),
        fmspc=_hex(_get(info, "fmspc", w), 6, f"{w}.fmspc"),
        pce_id=_hex(_get(info, "pceId", w), 2, f"{w}.pceId"),
        tcb_type=_int(_get(info, "tcbType", w), f"{w}.tcbType"),
        tcb_evaluation_data_number=_int(_get(info, "tcbEvaluationDataNumber", w),
                                        f"{w}.tcbEvaluationDataNumber"),
        tdx_module=module,
        tdx_module_identities=tuple(identities),
        levels=tuple(levels),
    )


def parse_qe_identity(value: dict[str, Any]) -> QeIdentity:
    """Validate an ``enclaveIdentity`` object (TD_QE, version 2)."""
    w = "enclaveIdentity"
    ident = _obj(value, w)
    identity = _str(_get(ident, "id", w), f"{w}.id")
    version = _int(_get(ident, "version", w), f"{w}.version")
    if identity != "TD_QE" or version != 2:
        raise MalformedEvidence(f"{w}: id {identity!r} version {version}, expected 'TD_QE' v2")
    return QeIdentity(
        id=identity,
        version=version,
        issue_date=_date(_get(ident, "issueDate", w), f"{w}.issueDate"),
        next_update=_date(_get(ident, "nextUpdate", w), f"{w}.nextUpdate"),
        tcb_evaluation_data_number=_int(_get(ident, "tcbEvaluationDataNumber", w),
                                        f"{w}.tcbEvaluationDataNumber"),
        misc_select=int.from_bytes(_hex(_get(ident, "miscselect", w), 4, f"{w}.miscselect")),
        misc_select_mask=int.from_bytes(
            _hex(_get(ident, "miscselectMask", w), 4, f"{w}.miscselectMask")),
        attributes=_hex(_get(ident, "attributes", w), 16, f"{w}.attributes"),
        attributes_mask=_hex(_get(ident, "attributesMask", w), 16, f"{w}.attributesMask"),
        mr_signer=_hex(_get(ident, "mrsigner", w), 32, f"{w}.mrsigner"),
        isv_prod_id=_int(_get(ident, "isvprodid", w), f"{w}.isvprodid", 0xFFFF),
        levels=_isv_levels(_get(ident, "tcbLevels", w), QE_TCB_STATUSES, f"{w}.tcbLevels"),
    )


def tcb_info_response(raw: bytes) -> tuple[SignedJson, TcbInfo]:
    """Parse a TDX TCB info response: its signed part and the validated TCB info."""
    signed = signed_json(raw, "tcbInfo", "TCB info")
    return signed, parse_tcb_info(signed.value)


def qe_identity_response(raw: bytes) -> tuple[SignedJson, QeIdentity]:
    """Parse a QE identity response: its signed part and the validated identity."""
    signed = signed_json(raw, "enclaveIdentity", "QE identity")
    return signed, parse_qe_identity(signed.value)
