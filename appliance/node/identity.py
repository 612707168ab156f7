"""The node's ed25519 identity: created once in the data dir (0600), never logged."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

from appliance.ao.encoding import b64url
from appliance.errors import ConfigError
from appliance.logfmt import fields
from attestation.atomic import write_atomically

log = logging.getLogger("appliance.identity")

KEY_FILE = "node-key.ed25519"


@dataclass(frozen=True)
class NodeIdentity:
    """An ed25519 signing key and the AO address derived from it."""

    signing_key: nacl.signing.SigningKey = field(repr=False)
    public_key: bytes = field(init=False, repr=False, compare=False)
    """The 32-byte ed25519 public key (the ANS-104 owner for signature type 2)."""
    address: str = field(init=False, repr=False, compare=False)
    """base64url(SHA-256(public key)): the node's AO/Arweave address."""

    def __post_init__(self) -> None:
        # Read for every item the node signs or checks the owner of: derived once.
        public = bytes(self.signing_key.verify_key)
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "address", b64url(hashlib.sha256(public).digest()))

    def sign(self, message: bytes) -> bytes:
        """Deterministic ed25519 signature (RFC 8032): same input, same signature."""
        return bytes(self.signing_key.sign(message).signature)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeIdentity:
        """Load the key from ``data_dir``, creating it (mode 0600, atomically) on first start."""
        path = data_dir / KEY_FILE
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
            seed = path.read_bytes()
            if len(seed) != 32:
                raise ConfigError(f"{path} is not a 32-byte ed25519 seed")
            return cls(nacl.signing.SigningKey(seed))
        data_dir.mkdir(parents=True, exist_ok=True)
        key = nacl.signing.SigningKey.generate()
        write_atomically(path, bytes(key), mode=0o600)
        identity = cls(key)
        log.info("%s", fields("node key created", address=identity.address, path=path))
        return identity
