"""Attestation items: evidence from the TEE binding the node key and config digest (DESIGN §4)."""

from __future__ import annotations

import base64
import json

from appliance.ao import items
from appliance.ao.encoding import b64url
from appliance.node.chain import report_data
from appliance.node.identity import NodeIdentity
from attestation.evidence import EvidenceProvider


def _pem_or_b64(blob: bytes) -> str:
    return blob.decode("ascii") if blob.lstrip().startswith(b"-----BEGIN") else \
        base64.b64encode(blob).decode("ascii")


def make_attestation(identity: NodeIdentity, provider: EvidenceProvider, config_digest: bytes,
                     nonce: bytes) -> items.Item:
    """Ask ``provider`` for evidence over this node's binding and wrap it in a signed item."""
    evidence = provider.get_evidence(report_data(identity.public_key, config_digest, nonce))
    body = {
        "platform": str(evidence.platform),
        "evidence": base64.b64encode(evidence.raw).decode("ascii"),
        "certificates": [_pem_or_b64(c) for c in evidence.certificates],
        "node_key": b64url(identity.public_key),
        "config_digest": config_digest.hex(),
        "nonce": base64.b64encode(nonce).decode("ascii"),
    }
    tags = [("Data-Protocol", "ao"), ("Type", "Attestation"),
            ("TEE-Platform", str(evidence.platform)),
            ("Nonce-Base64", base64.b64encode(nonce).decode("ascii"))]
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return items.sign(identity, tags=tags, data=data)
