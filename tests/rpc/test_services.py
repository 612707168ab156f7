"""Standard services beside Operator (health, reflection) and the go-grpc-prometheus metrics."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from appliance.rpc.gen import operator_pb2 as pb
from appliance.rpc.gen import operator_pb2_grpc as pb_grpc
from tests.rpc.support import Live, tls_channel

OPERATOR = "ao_appliance.v1.Operator"


@pytest.mark.parametrize("service", ["", OPERATOR])
def test_health_reports_serving(live: Live, service: str) -> None:
    for channel in (grpc.insecure_channel(f"unix:{live.unix}"),
                    tls_channel(live.tcp, live.pki.ca, live.pki.operator)):
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_health_watch_streams_the_current_status(live: Live) -> None:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"unix:{live.unix}"))
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=OPERATOR), timeout=30)
    assert next(iter(watch)).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


def test_health_of_unknown_service_is_not_found(live: Live) -> None:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"unix:{live.unix}"))
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_services(live: Live) -> None:
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(f"unix:{live.unix}"))
    services = set(database.get_services())
    assert {OPERATOR, "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services
    operator = DescriptorPool(database).FindServiceByName(OPERATOR)
    assert {m.name for m in operator.methods} == {
        "GetStatus", "GetAttestation", "AddModule", "Spawn", "SendMessage", "GetResult",
        "StreamResults", "DryRun", "ListProcesses", "ForceCheckpoint"}
    assert operator.methods_by_name["StreamResults"].server_streaming


def _value(live: Live, name: str, **labels: str) -> float:
    value = live.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_metrics_use_go_grpc_prometheus_names(live: Live) -> None:
    unary = {"grpc_type": "unary", "grpc_service": OPERATOR, "grpc_method": "GetStatus"}
    stream = {"grpc_type": "server_stream", "grpc_service": OPERATOR,
              "grpc_method": "StreamResults"}
    assert live.registry.get_sample_value(
        "grpc_server_handled_total", {**unary, "grpc_code": "DataLoss"}) == 0.0
    before = {name: _value(live, name, **unary) for name in (
        "grpc_server_started_total", "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total", "grpc_server_handling_seconds_count")}
    ok = _value(live, "grpc_server_handled_total", **unary, grpc_code="OK")
    denied = _value(live, "grpc_server_handled_total", **unary, grpc_code="PermissionDenied")
    sent = _value(live, "grpc_server_msg_sent_total", **stream)
    live.local().GetStatus(pb.GetStatusRequest(), timeout=30)
    with pytest.raises(grpc.RpcError):
        live.operator(live.pki.intruder).GetStatus(pb.GetStatusRequest(), timeout=30)
    stub = pb_grpc.OperatorStub(grpc.insecure_channel(f"unix:{live.unix}"))
    list(stub.StreamResults(pb.StreamResultsRequest(process_id=live.process_id, limit=2),
                            timeout=30))
    with pytest.raises(grpc.RpcError):
        stub.GetResult(pb.GetResultRequest(process_id="nope", message_id="nope"), timeout=30)
    for name, value in before.items():
        expected = value + (1 if name == "grpc_server_msg_sent_total" else 2)
        assert _value(live, name, **unary) == expected, name
    assert _value(live, "grpc_server_handled_total", **unary, grpc_code="OK") == ok + 1
    assert _value(live, "grpc_server_handled_total", **unary,
                  grpc_code="PermissionDenied") == denied + 1
    assert _value(live, "grpc_server_msg_sent_total", **stream) == sent + 2
    assert _value(live, "grpc_server_handled_total", grpc_type="unary", grpc_service=OPERATOR,
                  grpc_method="GetResult", grpc_code="NotFound") >= 1
