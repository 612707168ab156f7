"""Every Operator RPC against a real node over mTLS and the unix socket."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from appliance import __version__
from appliance.ao import items
from appliance.config import AppConfig, Listeners
from appliance.rpc.gen import operator_pb2 as pb
from appliance.rpc.gen import operator_pb2_grpc as pb_grpc
from tests.rpc.support import Live, message_item, process_item, serving

_counter = iter(range(1000, 100_000))


def _send(live: Live, code: str) -> tuple[items.Item, pb.SubmitItemResponse]:
    msg = message_item(live.client, live.process_id, code, next(_counter))
    return msg, live.local().SendMessage(pb.SubmitItemRequest(item=msg.raw), timeout=30)


def test_status_reports_identity_and_queues(live: Live) -> None:
    status = live.operator().GetStatus(pb.GetStatusRequest(), timeout=30)
    assert status.address == live.node.identity.address
    assert status.version == __version__
    assert status.tee_platform == "emulated"
    assert status.attestation_id == live.node.attestation_id
    assert 0 <= status.attestation_age_seconds < 600
    assert status.processes >= 1
    assert status.config_digest == live.node.config_digest.hex()
    assert status.timestamp_ms > 0
    assert status.schedule_backlog >= 0 and status.outbox_pending >= 0
    assert all(u.status in ("failed", "pending-remote") and u.item and u.reason
               for u in status.outbox_undelivered)


def test_attestation_binds_the_callers_nonce(live: Live) -> None:
    answer = live.operator().GetAttestation(pb.GetAttestationRequest(nonce=b"operator nonce"),
                                            timeout=30)
    item = items.parse_verified(answer.item, 1 << 20)
    assert item.id == answer.id and item.owner_address == live.node.identity.address
    assert items.first_tag(item, "Type") == "Attestation"
    assert answer.nonce == b"operator nonce"
    assert answer.platform == "emulated" and answer.evidence
    assert answer.config_digest == live.node.config_digest.hex()
    assert live.node.item_raw(answer.id) == answer.item


@pytest.mark.parametrize("nonce", [b"", b"x" * 65])
def test_attestation_refuses_bad_nonce(live: Live, nonce: bytes) -> None:
    with pytest.raises(grpc.RpcError) as err:
        live.operator().GetAttestation(pb.GetAttestationRequest(nonce=nonce), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_send_message_then_get_signed_result(live: Live) -> None:
    msg, receipt = _send(live, "return 1 + 1")
    assert receipt.id == msg.id and receipt.type == "Message"
    assert receipt.process_id == live.process_id and receipt.HasField("slot")
    answer = live.operator().GetResult(pb.GetResultRequest(process_id=live.process_id,
                                                           message_id=msg.id), timeout=60)
    assert answer.slot == receipt.slot
    assert json.loads(answer.result_json)["Output"]["data"] == "2"
    result = items.parse_verified(answer.result_item, 1 << 24)
    assert result.id == answer.result_id
    assert result.owner_address == live.node.identity.address
    assert items.first_tag(result, "Type") == "Result"
    assert items.first_tag(result, "Message") == msg.id
    assert result.data == answer.result_json.encode()


def test_spawn_and_add_module_receipts(live: Live) -> None:
    process = process_item(live.client, live.module_id, live.node.identity.address, "second")
    receipt = live.local().Spawn(pb.SubmitItemRequest(item=process.raw), timeout=30)
    assert (receipt.id, receipt.type, receipt.process_id, receipt.slot) == (
        process.id, "Process", process.id, 0)
    again = live.local().AddModule(pb.SubmitItemRequest(
        item=live.node.item_raw(live.module_id)), timeout=30)
    assert again.id == live.module_id and again.type == "Module"
    assert not again.HasField("slot") and again.process_id == ""


def test_stream_results_resumes_from_a_slot(live: Live) -> None:
    sent = [_send(live, f"return {n} * 10") for n in range(3)]
    last = sent[-1][1].slot
    stub = live.operator()
    stub.GetResult(pb.GetResultRequest(process_id=live.process_id, message_id=sent[-1][0].id),
                   timeout=60)
    everything = list(stub.StreamResults(pb.StreamResultsRequest(
        process_id=live.process_id, from_slot=0, limit=last + 1), timeout=60))
    assert [e.slot for e in everything] == list(range(last + 1))
    resumed = list(stub.StreamResults(pb.StreamResultsRequest(
        process_id=live.process_id, from_slot=last - 1, limit=2), timeout=60))
    assert [(e.slot, e.message_id) for e in resumed] == [
        (last - 1, sent[-2][0].id), (last, sent[-1][0].id)]
    for entry in resumed:
        item = items.parse_verified(entry.result_item, 1 << 24)
        assert item.id == entry.result_id and item.data == entry.result_json.encode()


def test_stream_results_follows_new_results_until_cancelled(live: Live) -> None:
    stub = live.operator()
    row = live.node.home.store.one("SELECT max(slot) + 1 FROM schedule WHERE process_id = ?",
                              live.process_id)
    assert row is not None
    start = int(row[0])
    call = stub.StreamResults(pb.StreamResultsRequest(process_id=live.process_id,
                                                      from_slot=start), timeout=60)
    got: list[int] = []
    ended: list[grpc.StatusCode] = []
    done = threading.Event()

    def read() -> None:
        try:
            for entry in call:
                got.append(entry.slot)
                if len(got) == 2:
                    done.set()
        except grpc.RpcError as exc:
            ended.append(exc.code())

    reader = threading.Thread(target=read)
    reader.start()
    slots = [_send(live, f"return {n}")[1].slot for n in (7, 8)]
    assert done.wait(60), got
    call.cancel()
    reader.join(30)
    assert got == slots == [start, start + 1]
    assert ended == [grpc.StatusCode.CANCELLED]


def test_dry_run_evaluates_without_keeping(live: Live) -> None:
    before = live.counts()
    answer = live.operator().DryRun(pb.DryRunRequest(
        process_id=live.process_id, tags=[pb.Tag(name="Action", value="Eval")],
        data="return 6 * 7", owner=live.client.address), timeout=60)
    assert json.loads(answer.result_json)["Output"]["data"] == "42"
    assert live.counts() == before


def test_list_processes_pages_through_every_process(live: Live) -> None:
    for name in ("page-a", "page-b"):
        live.local().Spawn(pb.SubmitItemRequest(item=process_item(
            live.client, live.module_id, live.node.identity.address, name).raw), timeout=30)
    stub = live.operator()
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListProcesses(pb.ListProcessesRequest(page_size=1, page_token=token),
                                  timeout=30)
        assert len(page.processes) == 1
        seen.append(page.processes[0].id)
        token = page.next_page_token
        if not token:
            break
    total = live.counts()[2]
    assert len(seen) == len(set(seen)) == total >= 3
    first = stub.ListProcesses(pb.ListProcessesRequest(), timeout=30).processes
    assert [p.id for p in first] == seen
    mine = next(p for p in first if p.id == live.process_id)
    assert mine.module_id == live.module_id and mine.owner == live.client.address
    assert mine.scheduled >= 1


def test_force_checkpoint_reports_the_slot(live: Live) -> None:
    msg, receipt = _send(live, "Counter = 5; return Counter")
    live.local().GetResult(pb.GetResultRequest(process_id=live.process_id, message_id=msg.id),
                           timeout=60)
    answer = live.operator().ForceCheckpoint(pb.ForceCheckpointRequest(
        process_id=live.process_id), timeout=60)
    assert answer.slot >= receipt.slot
    assert len(answer.sha256) == 64 and answer.memory_bytes % 65536 == 0
    listed = live.local().ListProcesses(pb.ListProcessesRequest(page_size=1000), timeout=30)
    mine = next(p for p in listed.processes if p.id == live.process_id)
    assert mine.HasField("checkpoint_slot") and mine.checkpoint_slot == answer.slot


def test_following_stream_ends_unavailable_when_the_server_stops(live: Live,
                                                                  tmp_path: Path) -> None:
    sock = tmp_path / "stop.sock"
    registry = CollectorRegistry()
    config = AppConfig(listen=Listeners(grpc=None, grpc_unix=sock))
    with serving(live.node, config, registry) as (_loop, _handle):
        stub = pb_grpc.OperatorStub(grpc.insecure_channel(f"unix:{sock}"))
        call = stub.StreamResults(pb.StreamResultsRequest(process_id=live.process_id,
                                                          from_slot=10**9), timeout=60)
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"unix:{sock}"))
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
            health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        next(iter(call))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "resume from slot 1000000000" in err.value.details()
    assert registry.get_sample_value("grpc_server_handled_total", {
        "grpc_type": "server_stream", "grpc_service": "ao_appliance.v1.Operator",
        "grpc_method": "StreamResults", "grpc_code": "Unavailable"}) == 1.0


def test_cancelled_stream_is_counted_as_canceled(live: Live) -> None:
    labels = {"grpc_type": "server_stream", "grpc_service": "ao_appliance.v1.Operator",
              "grpc_method": "StreamResults", "grpc_code": "Canceled"}
    before = live.registry.get_sample_value("grpc_server_handled_total", labels) or 0.0
    call = live.local().StreamResults(pb.StreamResultsRequest(process_id=live.process_id),
                                      timeout=60)
    assert next(iter(call)).slot == 0
    call.cancel()
    deadline = time.monotonic() + 10
    while live.registry.get_sample_value("grpc_server_handled_total", labels) == before:
        assert time.monotonic() < deadline
        time.sleep(0.05)
