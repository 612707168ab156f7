"""``ao-appliance serve --grpc`` starts the operator API and stops it cleanly on SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance.rpc.gen import operator_pb2 as pb
from appliance.rpc.gen import operator_pb2_grpc as pb_grpc
from tests.support.paths import REPO


def test_serve_exposes_the_operator_api_on_loopback(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--http", "127.0.0.1:0", "--grpc",
         "127.0.0.1:0", "--tee", "emulated", "--data-dir", str(tmp_path / "node")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "listening"
        channel = grpc.insecure_channel(event["grpc"])
        status = pb_grpc.OperatorStub(channel).GetStatus(pb.GetStatusRequest(), timeout=30)
        assert status.address == event["address"]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
