"""Domain errors leave as gRPC codes; a refused request stores nothing."""

from __future__ import annotations

import grpc
import pytest

from appliance.ao import items
from appliance.api.http_errors import http_status
from appliance.errors import (
    BadRequest,
    EvaluationError,
    NotFound,
    NotHosted,
    PeerRefused,
    TooLarge,
)
from appliance.network.trust import PeerPending
from appliance.rpc.gen import operator_pb2 as pb
from appliance.rpc.status import client_message, grpc_code
from tests.rpc.conftest import MAX_ITEM
from tests.rpc.support import Live, message_item

INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNKNOWN_ID = "Q" * 43


def _message(live: Live, size: int = 0) -> items.Item:
    return items.sign(live.client, target=live.process_id, data=b"x" * size,
                      tags=[("Data-Protocol", "ao"), ("Type", "Message")])


def _submit(live: Live, rpc: str, raw: bytes) -> None:
    getattr(live.local(), rpc)(pb.SubmitItemRequest(item=raw), timeout=30)


def _forged(live: Live) -> bytes:
    raw = bytearray(message_item(live.client, live.process_id, "return 1", 1).raw)
    raw[-1] ^= 0x01
    return bytes(raw)


CASES = {
    "empty": ("SendMessage", lambda live: b"", INVALID),
    "garbage": ("SendMessage", lambda live: b"\x02\x00" + b"x" * 200, INVALID),
    "forged": ("SendMessage", _forged, INVALID),
    "no-protocol": ("SendMessage", lambda live: items.sign(
        live.client, target=live.process_id, data=b"x", tags=[("Type", "Message")]).raw,
        INVALID),
    "wrong-rpc": ("AddModule", lambda live: _message(live).raw, INVALID),
    "module-without-format": ("AddModule", lambda live: items.sign(
        live.client, data=b"\0asm", tags=[("Data-Protocol", "ao"), ("Type", "Module")]).raw,
        INVALID),
    "unknown-process": ("SendMessage", lambda live: message_item(
        live.client, UNKNOWN_ID, "return 1", 5).raw, grpc.StatusCode.NOT_FOUND),
    "wrong-scheduler": ("Spawn", lambda live: items.sign(live.client, tags=[
        ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", live.module_id),
        ("Scheduler", "S" * 43)]).raw, grpc.StatusCode.FAILED_PRECONDITION),
    "over-node-limit": ("SendMessage", lambda live: _message(live, MAX_ITEM).raw,
                        grpc.StatusCode.RESOURCE_EXHAUSTED),
    "over-transport-limit": ("SendMessage", lambda live: _message(live, MAX_ITEM + 200_000).raw,
                             grpc.StatusCode.RESOURCE_EXHAUSTED),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_items_are_refused_and_store_nothing(live: Live, case: str) -> None:
    rpc, build, code = CASES[case]
    raw = build(live)
    before = live.counts()
    with pytest.raises(grpc.RpcError) as err:
        _submit(live, rpc, raw)
    assert err.value.code() == code, err.value.details()
    assert err.value.details()
    assert live.counts() == before


@pytest.mark.parametrize("call", ["result", "stream", "dry-run", "checkpoint", "message"])
def test_unknown_ids_are_not_found(live: Live, call: str) -> None:
    stub = live.operator()
    calls = {
        "result": lambda: stub.GetResult(pb.GetResultRequest(
            process_id=UNKNOWN_ID, message_id=UNKNOWN_ID), timeout=30),
        "message": lambda: stub.GetResult(pb.GetResultRequest(
            process_id=live.process_id, message_id=UNKNOWN_ID), timeout=30),
        "stream": lambda: list(stub.StreamResults(pb.StreamResultsRequest(
            process_id=UNKNOWN_ID), timeout=30)),
        "dry-run": lambda: stub.DryRun(pb.DryRunRequest(process_id=UNKNOWN_ID), timeout=30),
        "checkpoint": lambda: stub.ForceCheckpoint(pb.ForceCheckpointRequest(
            process_id=UNKNOWN_ID), timeout=30),
    }
    with pytest.raises(grpc.RpcError) as err:
        calls[call]()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("request_", [pb.ListProcessesRequest(page_size=1001),
                                      pb.ListProcessesRequest(page_token="!!not-base64!!")])
def test_bad_paging_is_invalid_argument(live: Live, request_: pb.ListProcessesRequest) -> None:
    with pytest.raises(grpc.RpcError) as err:
        live.operator().ListProcesses(request_, timeout=30)
    assert err.value.code() == INVALID


def test_mapping_table_and_no_leaked_internals() -> None:
    assert grpc_code(BadRequest("x")) == INVALID
    assert grpc_code(NotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert grpc_code(TooLarge("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_code(NotHosted("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_code(PeerRefused("x")) == grpc.StatusCode.PERMISSION_DENIED
    assert (http_status(PeerRefused("x")), http_status(PeerPending("x"))) == (403, 503)
    assert grpc_code(PeerPending("x")) == grpc.StatusCode.UNAVAILABLE
    assert grpc_code(EvaluationError("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_code(KeyError("secret")) == grpc.StatusCode.INTERNAL
    assert "secret" not in client_message(KeyError("secret"))
    assert client_message(NotFound("process p")) == "process p"
