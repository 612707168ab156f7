"""Build a :class:`Proof` from a running node (served as ``GET /proof/{message}?process-id=``).

:func:`proof_chunks` writes the bundle's JSON a page of slots at a time (the HTTP route streams
it, chunked), so memory stays bounded by one page whatever the history's length; the bytes are
those of :meth:`Proof.encode`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from appliance.ao import items
from appliance.errors import NotFound
from appliance.node.node import Node
from appliance.proof.bundle import PROOF_FORMAT, Proof

PAGE = 1000


def _b64(blob: bytes) -> bytes:
    return b'"' + base64.b64encode(blob) + b'"'


def _pages(node: Node, process_id: str, last: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """Raw (message, assignment) of slots 0..``last``, a page at a time; a gap is NotFound."""
    done = 0
    while done <= last:
        page = node.schedule_items(process_id, done, min(last, done + PAGE - 1))
        if not page or page[0][0] != done or page[-1][0] != done + len(page) - 1:
            raise NotFound(f"schedule of {process_id} has a gap at slot {done}")
        yield [(message, assignment) for _slot, message, assignment in page]
        done += len(page)


def proof_chunks(node: Node, process_id: str, message_id: str, *,
                 replay: bool = False) -> Iterator[bytes]:
    """The bundle's JSON in pieces: every Assignment and Result from slot 0 to ``message_id``'s
    slot, the Attestations they name and, with ``replay``, the messages and the module.

    The result of ``message_id`` must be stored already (NotFound otherwise, raised before the
    first piece).
    """
    _, target = node.scheduled(process_id, message_id)
    last = int(items.first_tag(target, "Nonce") or 0)
    if node.result_items(process_id, last, last) == []:
        raise NotFound(f"result for {message_id} is not computed yet")
    head = {"format": PROOF_FORMAT, "process": process_id, "message": message_id}
    yield json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"assignments":['
    for n, page in enumerate(_pages(node, process_id, last)):
        yield (b"," if n else b"") + b",".join(_b64(a) for _, a in page)
    yield b'],"results":['
    attestations: dict[str, bytes] = {}
    first = 0
    while first <= last:
        rows = node.result_items(process_id, first, min(last, first + PAGE - 1))
        if not rows or rows[0][0] != first:
            raise NotFound(f"results of {process_id} have a gap at slot {first}")
        for _, raw in rows:
            name = items.first_tag(items.parse_unverified(raw), "Attestation") or ""
            if name not in attestations:
                attestations[name] = node.item_raw(name)
        yield (b"," if first else b"") + b",".join(_b64(raw) for _, raw in rows)
        first += len(rows)
    crons = node.cron_results_between(process_id, 0, last - 1) if last > 0 else []
    for raw in crons:
        name = items.first_tag(items.parse_unverified(raw), "Attestation") or ""
        if name not in attestations:
            attestations[name] = node.item_raw(name)
    yield b'],"attestations":[' + b",".join(_b64(a) for a in attestations.values())
    yield b'],"messages":['
    module: bytes | None = None
    if replay:
        for n, page in enumerate(_pages(node, process_id, last)):
            if module is None:
                process = items.parse_unverified(page[0][0])
                module = node.item_raw(items.first_tag(process, "Module") or "")
            yield (b"," if n else b"") + b",".join(_b64(m) for m, _ in page)
    yield b'],"module":' + (b"null" if module is None else _b64(module))
    yield b',"crons":[' + b",".join(_b64(c) for c in crons) + b"]}"


def build_proof(node: Node, process_id: str, message_id: str, *, replay: bool = False) -> Proof:
    """The whole bundle in memory. Waits (up to the node's result wait) for the message's
    result to be computed."""
    node.result(process_id, message_id)
    return Proof.decode(b"".join(proof_chunks(node, process_id, message_id, replay=replay)))
