"""ANS-104 data items as the node core uses them: parse, verify (types 1 Arweave RSA-PSS-4096,
2 ed25519, 3 Ethereum secp256k1), sign (ed25519, type 2; any type with a caller's signer).

Layout (ANS-104): signature type (u16 LE) | signature | owner | target flag [+32] |
anchor flag [+32] | tag count (u64 LE) | tag bytes length (u64 LE) | Avro tags | data.
The signed message is the SHA-384 deep hash of
``["dataitem", "1", type, owner, target, anchor, tags, data]``; the id is SHA-256(signature).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import nacl.exceptions
import nacl.signing
from Crypto.Hash import keccak
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from appliance.ao.encoding import b64url, b64url_decode
from appliance.errors import BadRequest, TooLarge


class Signer(Protocol):
    """An ed25519 key that signs items (the node's identity)."""

    @property
    def public_key(self) -> bytes:
        """The 32-byte ed25519 public key (the item's owner)."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message``."""
        ...


# signature type -> (signature length, owner length)
SIGNATURE_TYPES = {1: (512, 512), 2: (64, 32), 3: (65, 65)}
_U16 = struct.Struct("<H")
_COUNTS = struct.Struct("<QQ")  # tag count, tag bytes length
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_TAGS = 128
MAX_TAG_NAME = 1024
MAX_TAG_VALUE = 3072


@dataclass(frozen=True)
class Item:
    """A parsed data item; ``raw`` is its exact serialisation."""

    signature_type: int
    signature: bytes
    owner: bytes
    target: str
    anchor: bytes
    tags: list[tuple[str, str]]
    data: bytes
    raw: bytes
    tag_bytes: bytes
    id: str = field(init=False, repr=False, compare=False)
    """base64url(SHA-256(signature))."""
    owner_address: str = field(init=False, repr=False, compare=False)
    """base64url(SHA-256(owner public key))."""

    def __post_init__(self) -> None:
        # Every item's id and owner address get read (stored, routed, handed to the guest):
        # computed here, not by functools.cached_property, whose lock costs more in 3.11.
        object.__setattr__(self, "id", b64url(_sha256(self.signature).digest()))
        object.__setattr__(self, "owner_address", _address(self.owner))

    def signature_message(self) -> bytes:
        """The 48-byte deep hash the signature covers."""
        target = _id_bytes(self.target) if self.target else b""
        return item_deep_hash(self.signature_type, self.owner, target, self.anchor,
                              self.tag_bytes, self.data)


@lru_cache(maxsize=4096)
def _address(owner: bytes) -> str:
    """Owners repeat (the node's key, a client's): their addresses are cached."""
    return b64url(_sha256(owner).digest())


@lru_cache(maxsize=4096)
def _id_bytes(item_id: str) -> bytes:
    """Targets repeat (a process's id): their decoded bytes are cached."""
    return b64url_decode(item_id)


def first_tag(item: Item, name: str) -> str | None:
    """Value of the first tag called ``name``."""
    return next((v for n, v in item.tags if n == name), None)


_sha384 = hashlib.sha384
_sha256 = hashlib.sha256


@lru_cache(maxsize=4096)
def _blob_tag(length: int) -> bytes:
    return _sha384(b"blob" + str(length).encode()).digest()


def _blob_hash(chunk: bytes) -> bytes:
    return _sha384(_blob_tag(len(chunk)) + _sha384(chunk).digest()).digest()


_EMPTY_BLOB = _blob_hash(b"")  # node-signed items have no anchor, Assignments no data
# Owners and targets repeat (the node's own key, a process's id): their blob hashes are cached.
_repeated_blob_hash = lru_cache(maxsize=4096)(_blob_hash)


@lru_cache(maxsize=1024)
def _item_prefix(signature_type: int, owner: bytes) -> bytes:
    """The deep-hash accumulator after ``["dataitem", "1", type, owner`` (8-element list)."""
    acc = _sha384(b"list8").digest()
    for part in (b"dataitem", b"1", str(signature_type).encode(), owner):
        acc = _sha384(acc + _blob_hash(part)).digest()
    return acc


def item_deep_hash(signature_type: int, owner: bytes, target: bytes, anchor: bytes,
                   tag_bytes: bytes, data: bytes) -> bytes:
    """Arweave's SHA-384 deep hash of ``["dataitem", "1", type, owner, target, anchor, tags,
    data]`` (a list hashes as ``"list" + length``, each blob as ``"blob" + length`` then its
    SHA-384, folded left), with the constant head and repeated owners/targets cached."""
    acc = _sha384(_item_prefix(signature_type, owner) + _repeated_blob_hash(target)).digest()
    acc = _sha384(acc + (_blob_hash(anchor) if anchor else _EMPTY_BLOB)).digest()
    acc = _sha384(acc + _blob_hash(tag_bytes)).digest()
    return _sha384(acc + (_blob_hash(data) if data else _EMPTY_BLOB)).digest()


def _zigzag(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ZIGZAG = tuple(_zigzag(n) for n in range(MAX_TAG_VALUE + 1))


@lru_cache(maxsize=1024)
def _avro_name(name: str) -> bytes:
    """A tag name as Avro bytes (length, then UTF-8): names repeat, so they are cached."""
    return _avro_bytes(name.encode())


def _avro_bytes(text: bytes) -> bytes:
    length = len(text)
    return (_ZIGZAG[length] if length <= MAX_TAG_VALUE else _zigzag(length)) + text


def encode_tags(tags: Sequence[tuple[str, str]]) -> bytes:
    """Avro encoding of ``[{name: bytes, value: bytes}]`` (empty bytes for no tags)."""
    if not tags:
        return b""
    name_bytes, value_bytes = _avro_name, _avro_bytes
    count = len(tags)
    out = [_ZIGZAG[count] if count <= MAX_TAG_VALUE else _zigzag(count)]
    for name, value in tags:
        out.append(name_bytes(name))
        out.append(value_bytes(value.encode()))
    out.append(b"\0")
    return b"".join(out)


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BadRequest("malformed Avro tag encoding")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def decode_tags(buf: bytes, count: int) -> list[tuple[str, str]]:
    """Strict inverse of :func:`encode_tags`; ``count`` is the header's tag count.

    Every count and length read from ``buf`` is checked before the work it implies: a block may
    hold no more tags than the header has left to declare (``count`` <= ``MAX_TAGS``) nor more
    than the bytes left can encode (2 bytes per empty tag), so decoding costs O(len(buf)).
    """
    if count == 0:
        if buf:
            raise BadRequest("tag bytes present but tag count is 0")
        return []
    tags: list[tuple[str, str]] = []
    pos = 0
    while True:
        block, pos = _read_long(buf, pos)
        if block == 0:
            break
        if block < 0:  # Avro: a negative count is followed by the block's size in bytes
            size, pos = _read_long(buf, pos)
            if not 0 <= size <= len(buf) - pos:
                raise BadRequest("Avro tag block size is negative or beyond the tag bytes")
            block = -block
        if block > count - len(tags):
            raise BadRequest(f"Avro tag block holds {block} tags; the header declares "
                             f"{count} (at most {MAX_TAGS})")
        if 2 * block > len(buf) - pos:
            raise BadRequest(f"Avro tag block claims {block} tags in {len(buf) - pos} bytes")
        for _ in range(block):
            fields = []
            for limit in (MAX_TAG_NAME, MAX_TAG_VALUE):
                byte = buf[pos] if pos < len(buf) else 0x80
                if byte < 0x80:  # one-byte varint: the usual case
                    length, pos = (byte >> 1) ^ -(byte & 1), pos + 1
                else:
                    length, pos = _read_long(buf, pos)
                if length < 0 or length > limit or pos + length > len(buf):
                    raise BadRequest("tag name or value is too long or truncated")
                try:
                    fields.append(buf[pos:pos + length].decode("utf-8"))
                except UnicodeDecodeError:
                    raise BadRequest("tag name or value is not UTF-8") from None
                pos += length
            tags.append((fields[0], fields[1]))
    if pos != len(buf) or len(tags) != count:
        raise BadRequest("tag count or tag bytes do not match the header")
    return tags


NOT_AN_ITEM = ("the body is not an ANS-104 data item: expected binary (Content-Type: "
               "application/octet-stream) starting with signature type 1, 2 or 3 "
               "(u16 little-endian), then signature, owner, target, anchor, tags and data")


def parse_unverified(raw: bytes, max_bytes: int = 1 << 62) -> Item:
    """Parse a data item strictly (layout only; see :func:`parse_verified`)."""
    if len(raw) > max_bytes:
        raise TooLarge(f"item of {len(raw)} bytes exceeds the limit of {max_bytes}")
    if len(raw) < 2:
        raise BadRequest("data item is truncated")
    (sig_type,) = _U16.unpack_from(raw, 0)
    if sig_type > 0xFF:  # text, JSON, HTML...: no ANS-104 signature type is that large
        raise BadRequest(f"{NOT_AN_ITEM}; this body starts with {raw[:8]!r}")
    if sig_type not in SIGNATURE_TYPES:
        raise BadRequest(f"unsupported signature type {sig_type}; this node verifies types "
                         f"1 (Arweave RSA-PSS), 2 (ed25519) and 3 (Ethereum secp256k1)")
    sig_len, owner_len = SIGNATURE_TYPES[sig_type]
    pos = 2
    if len(raw) < pos + sig_len + owner_len + 2:
        raise BadRequest("data item is truncated")
    signature = raw[pos:pos + sig_len]
    pos += sig_len
    owner = raw[pos:pos + owner_len]
    pos += owner_len
    fields = []
    for _ in range(2):
        if pos >= len(raw) or raw[pos] not in (0, 1):
            raise BadRequest("target/anchor presence byte must be 0 or 1")
        present = raw[pos] == 1
        pos += 1
        if present:
            if pos + 32 > len(raw):
                raise BadRequest("data item is truncated")
            fields.append(raw[pos:pos + 32])
            pos += 32
        else:
            fields.append(b"")
    if pos + 16 > len(raw):
        raise BadRequest("data item is truncated")
    count, length = _COUNTS.unpack_from(raw, pos)
    pos += 16
    if count > MAX_TAGS:
        raise BadRequest(f"more than {MAX_TAGS} tags")
    if pos + length > len(raw):
        raise BadRequest("data item is truncated")
    tag_bytes = raw[pos:pos + length]
    tags = decode_tags(tag_bytes, count)
    pos += length
    return Item(sig_type, signature, owner, b64url(fields[0]) if fields[0] else "", fields[1],
                tags, raw[pos:], raw, tag_bytes)


def _ethereum_digest(message: bytes) -> bytes:
    """keccak256 of the EIP-191 personal message (what ``signMessage`` signs)."""
    digest = keccak.new(digest_bits=256)
    digest.update(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)
    return digest.digest()


def _verify_ethereum(owner: bytes, message: bytes, signature: bytes) -> bool:
    """secp256k1 ECDSA over the EIP-191 digest; like libsecp256k1, high-S signatures fail."""
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < _SECP256K1_ORDER and 0 < s <= _SECP256K1_ORDER // 2):
        return False
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), owner)
        key.verify(encode_dss_signature(r, s), _ethereum_digest(message),
                   ec.ECDSA(Prehashed(hashes.SHA256())))
    except (ValueError, InvalidSignature):
        return False
    return True


def _verify_signature(item: Item) -> bool:
    message = item.signature_message()
    if item.signature_type == 2:
        try:
            nacl.signing.VerifyKey(item.owner).verify(message, item.signature)
        except (nacl.exceptions.BadSignatureError, ValueError):
            return False
        return True
    if item.signature_type == 3:
        return _verify_ethereum(item.owner, message, item.signature)
    try:
        key = rsa.RSAPublicNumbers(65537, int.from_bytes(item.owner, "big")).public_key()
    except ValueError:
        raise BadRequest("the owner is not an RSA public key (modulus too small or "
                         "malformed)") from None
    try:
        key.verify(item.signature, message,
                   padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                   hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def parse_verified(raw: bytes, max_bytes: int) -> Item:
    """Parse and check the signature; any failure is a :class:`BadRequest`."""
    item = parse_unverified(raw, max_bytes)
    if not _verify_signature(item):
        raise BadRequest(f"data item signature (type {item.signature_type}) does not verify")
    return item


def sign(identity: Signer, *, tags: Sequence[tuple[str, str]], data: bytes = b"",
         target: str | None = None, anchor: bytes = b"") -> Item:
    """A data item signed by ``identity`` (ed25519, deterministic)."""
    return sign_with(2, identity.public_key, identity.sign, tags=tags, data=data, target=target,
                     anchor=anchor)


def sign_with(signature_type: int, owner: bytes, signer: Callable[[bytes], bytes], *,
              tags: Sequence[tuple[str, str]], data: bytes = b"", target: str | None = None,
              anchor: bytes = b"") -> Item:
    """A data item of ``signature_type`` whose deep hash ``signer`` signs (for client keys)."""
    raw, signature, tag_bytes = _signed(signature_type, owner, signer, tags, data, target, anchor)
    return Item(signature_type, signature, owner, target or "", anchor, list(tags), data, raw,
                tag_bytes)


def signed_raw(identity: Signer, *, tags: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """The bytes and id of ``sign(identity, tags=tags)``, without the :class:`Item` (all the
    node keeps of an Assignment)."""
    raw, signature, _ = _signed(2, identity.public_key, identity.sign, tags, b"", None, b"")
    return raw, b64url(_sha256(signature).digest())


def _signed(signature_type: int, owner: bytes, signer: Callable[[bytes], bytes],
            tags: Sequence[tuple[str, str]], data: bytes, target: str | None,
            anchor: bytes) -> tuple[bytes, bytes, bytes]:
    """(raw item, signature, tag bytes)."""
    if anchor and len(anchor) != 32:
        raise ValueError("anchor must be 32 bytes")
    sig_len, owner_len = SIGNATURE_TYPES[signature_type]
    if len(owner) != owner_len:
        raise ValueError(f"signature type {signature_type} needs a {owner_len}-byte owner")
    tag_bytes = encode_tags(tags)
    target_raw = _id_bytes(target) if target else b""
    if target_raw and len(target_raw) != 32:
        raise ValueError("target must be a 32-byte id")
    message = item_deep_hash(signature_type, owner, target_raw, anchor, tag_bytes, data)
    signature = signer(message)
    if len(signature) != sig_len:
        raise ValueError(f"signature type {signature_type} needs a {sig_len}-byte signature")
    raw = b"".join([
        _U16.pack(signature_type), signature, owner,
        b"\1" + target_raw if target_raw else b"\0",
        b"\1" + anchor if anchor else b"\0",
        _COUNTS.pack(len(tags), len(tag_bytes)), tag_bytes, data,
    ])
    return raw, signature, tag_bytes
