"""``ao-appliance module upload``: sign a wasm file as an AO Module item and post it to a node.

Signed with an Arweave wallet (JWK, RSA-PSS, ANS-104 signature type 1: the wallet aos uses) or,
without ``--wallet``, a throwaway ed25519 key (a module's owner does not matter to the node).
Prints the Module id, the value aos takes as ``--module``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from appliance.ao import items
from appliance.ao.encoding import b64url_decode
from appliance.cli.urls import DEFAULT_NODE, node_url
from appliance.compute import module_format
from appliance.errors import ModuleError, UsageError
from appliance.node.identity import NodeIdentity

UPLOAD_SECONDS = 300.0


def register(sub: Any) -> None:
    """Register ``module upload``."""
    parser: argparse.ArgumentParser = sub.add_parser("module", help="AO module items")
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    up = actions.add_parser("upload", help="sign FILE as a Module item, post it, print its id")
    up.add_argument("file", type=Path, help="the module's wasm binary")
    up.add_argument("--format", required=True, dest="module_format",
                    help="Module-Format, e.g. wasm64-unknown-emscripten-draft_2024_02_15")
    up.add_argument("--wallet", type=Path, default=None,
                    help="Arweave wallet JWK to sign with (default: a throwaway ed25519 key)")
    up.add_argument("--node", default=DEFAULT_NODE, help=f"node URL (default {DEFAULT_NODE})")
    up.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE",
                    help="extra tag, e.g. Memory-Limit=1-gb (repeatable)")
    up.set_defaults(func=upload)


def _extra_tags(pairs: list[str]) -> list[tuple[str, str]]:
    tags = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--tag expects NAME=VALUE, got {pair!r}")
        tags.append((name, value))
    return tags


def _jwk_signer(path: Path) -> tuple[bytes, Any]:
    """(owner = modulus, signer) of an Arweave RSA wallet."""
    try:
        jwk = json.loads(path.read_text())
        fields = {k: int.from_bytes(b64url_decode(jwk[k]), "big")
                  for k in ("n", "e", "d", "p", "q", "dp", "dq", "qi")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not an Arweave wallet (RSA JWK): {exc}") from None
    public = rsa.RSAPublicNumbers(fields["e"], fields["n"])
    key = rsa.RSAPrivateNumbers(fields["p"], fields["q"], fields["d"], fields["dp"],
                                fields["dq"], fields["qi"], public).private_key()
    owner = fields["n"].to_bytes(512, "big")

    def sign(message: bytes) -> bytes:
        return key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                        hashes.SHA256())

    return owner, sign


def module_item(wasm: bytes, fmt: str, wallet: Path | None,
                extra: list[tuple[str, str]]) -> items.Item:
    """The signed Module item for ``wasm``."""
    try:
        module_format(fmt)
    except ModuleError as exc:
        raise UsageError(str(exc)) from None
    tags = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Module"),
            ("Module-Format", fmt), ("Input-Encoding", "JSON-1"),
            ("Output-Encoding", "JSON-1"), ("Content-Type", "application/wasm"), *extra]
    if wallet is None:
        identity = NodeIdentity(nacl.signing.SigningKey.generate())
        return items.sign(identity, tags=tags, data=wasm)
    owner, signer = _jwk_signer(wallet)
    return items.sign_with(1, owner, signer, tags=tags, data=wasm)


def upload(args: argparse.Namespace) -> int:
    """Sign and post the module; print its id."""
    try:
        wasm = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    item = module_item(wasm, args.module_format, args.wallet, _extra_tags(args.tag))
    url = node_url(args.node)
    request = urllib.request.Request(  # noqa: S310 - node_url allows http(s) only
        url + "/", data=item.raw, method="POST",
        headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=UPLOAD_SECONDS) as response:  # noqa: S310
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        sys.stderr.write(f"ao-appliance: the node refused the module ({exc.code}): {detail}\n")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach the node at {url}: {reason}") from None
    if body.get("id") != item.id:
        sys.stderr.write(f"ao-appliance: unexpected answer from the node: {body}\n")
        return 1
    print(item.id)
    return 0
