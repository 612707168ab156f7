"""``ao_appliance.v1.Operator`` on top of :class:`~appliance.node.node.Node`.

Handlers raise domain errors only (the interceptor maps them to statuses) and run every blocking
node or store call on a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from appliance import __version__
from appliance.ao import items
from appliance.api.waiters import ResultWaiters, await_result
from appliance.errors import BadRequest, NotFound, NotHosted
from appliance.network.peers import PeerDirectory, PeerState
from appliance.network.trust import PeerTrust
from appliance.node.db.queries import ResultRow
from appliance.node.node import Node, Receipt
from appliance.rpc.gen import operator_pb2 as pb
from appliance.rpc.gen import operator_pb2_grpc as pb_grpc

MIN_NONCE, MAX_NONCE = 1, 64
DEFAULT_PAGE, MAX_PAGE = 100, 1000
STREAM_BATCH = 64
POLL_SECONDS = 0.25
MAX_SLOT = 2**62


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _page_token(cursor: int) -> str:
    return base64.urlsafe_b64encode(str(cursor).encode()).decode().rstrip("=")


def _page_cursor(token: str) -> int:
    if not token:
        return 0
    try:
        cursor = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        cursor = -1
    if not 0 <= cursor <= MAX_SLOT:
        raise BadRequest(f"not a page token: {token!r}")
    return cursor


def _entry(row: ResultRow) -> pb.ResultEntry:
    return pb.ResultEntry(process_id=row.process_id, slot=row.slot, message_id=row.message_id,
                          result_id=row.result_id, result_json=row.data.decode("utf-8"),
                          result_item=row.raw)


def _peer(state: PeerState, trust: PeerTrust | None) -> pb.Peer:
    loc = state.location
    held = trust.state(loc.address) if trust is not None and loc is not None else None
    verdict = held.describe() if held is not None else None
    return pb.Peer(url=state.url, address=loc.address if loc else "",
                   location=loc.url if loc else "", ttl_ms=loc.ttl_ms if loc else 0,
                   state={None: "unknown", True: "reachable", False: "unreachable"}[
                       state.reachable],
                   last_seen_ms=state.last_seen_ms or 0, error=state.error or "",
                   trust=verdict["trust"] if verdict else "unverified",
                   trust_reason=verdict["reason"] if verdict else "unverified",
                   trust_detail=verdict["detail"] if verdict else "",
                   refusals=verdict["refusals"] if verdict else 0,
                   last_refusal_ms=(verdict["last_refusal_ms"] or 0) if verdict else 0)


class OperatorService(pb_grpc.OperatorServicer):
    """The Operator servicer bound to one node.

    ``closing`` is set when the server stops: following streams then end with ``UNAVAILABLE``
    (resume from the last slot received + 1 on another connection).
    """

    def __init__(self, node: Node, poll_seconds: float = POLL_SECONDS,
                 max_result_waiters: int = 256, peers: PeerDirectory | None = None,
                 trust: PeerTrust | None = None) -> None:
        self.node = node
        self.peers = peers
        self.trust = trust
        self.poll_seconds = poll_seconds
        self.closing = asyncio.Event()
        self.waiters = ResultWaiters(max_result_waiters)
        node.add_progress_listener(self.waiters.progress)

    # --- status and attestation --------------------------------------------------------------

    def _status(self) -> pb.GetStatusResponse:
        node, trust = self.node, self.trust
        counters = node.status()
        created_ms = node.item_created_ms(node.attestation_id)
        now_ms = time.time_ns() // 1_000_000
        age = 0.0 if created_ms is None else max(0.0, (now_ms - created_ms) / 1000)
        return pb.GetStatusResponse(
            address=node.identity.address, version=__version__,
            tee_platform=str(node.provider.platform), attestation_id=node.attestation_id,
            attestation_age_seconds=age, processes=counters["processes"],
            schedule_backlog=counters["schedule_backlog"],
            outbox_pending=counters["outbox_pending"],
            outbox_by_status=node.outbox_by_status(),
            config_digest=node.config_digest.hex(), block_height=node.settings.block_height,
            timestamp_ms=now_ms, peers=[_peer(p, self.trust) for p in self.peers.peers()]
            if self.peers is not None else [],
            allow_emulated_peers=bool(trust and trust.peer_policy.allow_emulated),
            trusts_no_peer=bool(trust and trust.peer_policy.trusts_nobody),
            last_peer_refusal=trust.last_refusal if trust else "",
            outbox_undelivered=[pb.OutboxUndelivered(**u) for u in node.outbox_failures()])

    async def GetStatus(self, request: pb.GetStatusRequest, context: Any
                        ) -> pb.GetStatusResponse:
        """Node identity, evidence platform and queue depths."""
        return await asyncio.to_thread(self._status)

    async def GetAttestation(self, request: pb.GetAttestationRequest, context: Any
                             ) -> pb.GetAttestationResponse:
        """A fresh Attestation item binding ``request.nonce``."""
        nonce = bytes(request.nonce)
        if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
            raise BadRequest(f"nonce must be {MIN_NONCE} to {MAX_NONCE} bytes, got {len(nonce)}")
        item = await asyncio.to_thread(self.node.attest, nonce)
        body = json.loads(item.data)
        return pb.GetAttestationResponse(
            item=item.raw, id=item.id, platform=str(body["platform"]),
            evidence=base64.b64decode(body["evidence"]),
            certificates=[str(c) for c in body["certificates"]],
            node_key=str(body["node_key"]), config_digest=str(body["config_digest"]),
            nonce=base64.b64decode(body["nonce"]))

    # --- ingest ------------------------------------------------------------------------------

    def _ingest(self, raw: bytes, kind: str, rpc: str) -> Receipt:
        if not raw:
            raise BadRequest(f"{rpc} needs an ANS-104 data item")
        item = items.parse_unverified(raw, self.node.settings.max_item_bytes)
        got = items.first_tag(item, "Type")
        if got != kind:
            raise BadRequest(f"{rpc} takes a {kind} item; got Type {got!r}")
        try:
            return self.node.ingest(raw)
        except (NotHosted, NotFound) as exc:
            if self.peers is None:
                raise
            raise self.peers.explain(raw, exc) from None

    async def _submit(self, request: pb.SubmitItemRequest, kind: str,
                      rpc: str) -> pb.SubmitItemResponse:
        receipt = await asyncio.to_thread(self._ingest, bytes(request.item), kind, rpc)
        response = pb.SubmitItemResponse(id=receipt.id, type=receipt.type,
                                         process_id=receipt.process_id or "")
        if receipt.slot is not None:
            response.slot = receipt.slot
        return response

    async def AddModule(self, request: pb.SubmitItemRequest, context: Any
                        ) -> pb.SubmitItemResponse:
        """Store a Module item."""
        return await self._submit(request, "Module", "AddModule")

    async def Spawn(self, request: pb.SubmitItemRequest, context: Any) -> pb.SubmitItemResponse:
        """Create a process from a Process item naming this node as scheduler."""
        return await self._submit(request, "Process", "Spawn")

    async def SendMessage(self, request: pb.SubmitItemRequest, context: Any
                          ) -> pb.SubmitItemResponse:
        """Schedule a Message item on its target process."""
        return await self._submit(request, "Message", "SendMessage")

    # --- results -----------------------------------------------------------------------------

    async def GetResult(self, request: pb.GetResultRequest, context: Any
                        ) -> pb.GetResultResponse:
        """The result JSON and signed Result item of one message (waiting for it holds no
        thread: see :func:`appliance.api.waiters.await_result`)."""
        await await_result(self.node, self.waiters, request.process_id, request.message_id)
        row = await asyncio.to_thread(self.node.result_row, request.process_id,
                                      request.message_id)
        return pb.GetResultResponse(process_id=row.process_id, message_id=row.message_id,
                                    slot=row.slot, result_id=row.result_id,
                                    result_json=row.data.decode("utf-8"), result_item=row.raw)

    async def StreamResults(self, request: pb.StreamResultsRequest, context: Any
                            ) -> AsyncIterator[pb.ResultEntry]:
        """Results from ``from_slot`` on, then each new one as it is committed."""
        process_id = request.process_id
        if request.from_slot > MAX_SLOT:
            raise BadRequest(f"from_slot must be at most {MAX_SLOT}")
        next_slot = request.from_slot
        remaining = request.limit or None
        while True:
            size = STREAM_BATCH if remaining is None else min(STREAM_BATCH, remaining)
            batch = await asyncio.to_thread(self.node.results_from, process_id, next_slot, size)
            for row in batch:
                yield _entry(row)
                next_slot = row.slot + 1
            if remaining is not None:
                remaining -= len(batch)
                if remaining <= 0:
                    return
            if len(batch) == size:
                continue
            try:
                await asyncio.wait_for(self.closing.wait(), self.poll_seconds)
            except TimeoutError:
                continue
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"node is shutting down; resume from slot {next_slot}")

    async def DryRun(self, request: pb.DryRunRequest, context: Any) -> pb.DryRunResponse:
        """Evaluate a message on the latest state without keeping anything."""
        message: dict[str, Any] = {"Tags": [{"name": t.name, "value": t.value}
                                            for t in request.tags],
                                   "Data": request.data}
        for key, value in (("Owner", request.owner), ("From", request.from_address),
                           ("Anchor", request.anchor)):
            if value:
                message[key] = value
        result = await asyncio.to_thread(self.node.dry_run, request.process_id, message)
        return pb.DryRunResponse(result_json=_json_text(result))

    # --- processes ---------------------------------------------------------------------------

    async def ListProcesses(self, request: pb.ListProcessesRequest, context: Any
                            ) -> pb.ListProcessesResponse:
        """One page of hosted processes, oldest first."""
        size = request.page_size or DEFAULT_PAGE
        if not 1 <= size <= MAX_PAGE:
            raise BadRequest(f"page_size must be between 1 and {MAX_PAGE}")
        after = _page_cursor(request.page_token)
        rows = await asyncio.to_thread(self.node.process_page, after, size + 1)
        response = pb.ListProcessesResponse()
        for row in rows[:size]:
            summary = response.processes.add(
                id=row.id, module_id=row.module_id, owner=row.owner, created_ms=row.created_ms,
                scheduled=row.scheduled, evaluated=row.evaluated)
            if row.checkpoint_slot is not None:
                summary.checkpoint_slot = row.checkpoint_slot
        if len(rows) > size:
            response.next_page_token = _page_token(rows[size - 1].cursor)
        return response

    def _checkpoint(self, process_id: str) -> pb.ForceCheckpointResponse:
        slot = self.node.checkpoint_now(process_id)
        sha256, size = self.node.checkpoint_digest(process_id, slot)
        return pb.ForceCheckpointResponse(slot=slot, sha256=sha256, memory_bytes=size)

    async def ForceCheckpoint(self, request: pb.ForceCheckpointRequest, context: Any
                              ) -> pb.ForceCheckpointResponse:
        """Checkpoint a process now at its latest evaluated slot."""
        return await asyncio.to_thread(self._checkpoint, request.process_id)
