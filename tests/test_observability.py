"""Metrics and structured logs carry what operators need: codes, latency, and the caller's request id."""

import asyncio
import json
import logging
import uuid

import grpc
from prometheus_client import REGISTRY

from coupons.auth.v1 import auth_pb2
from kernel.logs import JsonFormatter
from tests.support import expect_error


def _count(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("coupons_rpcs_total", {"component": "auth", "method": method, "code": code}) or 0


async def test_rpc_metrics_count_by_method_and_code(auth_stub):
    ok_before, refused_before = _count("GetSigningKeys", "OK"), _count("GetMe", "UNAUTHENTICATED")
    await auth_stub.GetSigningKeys(auth_pb2.GetSigningKeysRequest())
    await expect_error(auth_stub.GetMe(auth_pb2.GetMeRequest()), grpc.StatusCode.UNAUTHENTICATED)
    assert _count("GetSigningKeys", "OK") == ok_before + 1
    assert _count("GetMe", "UNAUTHENTICATED") == refused_before + 1
    assert (
        REGISTRY.get_sample_value(
            "coupons_rpc_duration_seconds_count", {"component": "auth", "method": "GetSigningKeys"}
        )
        >= 1
    )


async def test_access_log_carries_the_callers_request_id(auth_stub, caplog):
    request_id = f"test-{uuid.uuid4().hex}"
    with caplog.at_level(logging.INFO, logger="kernel.rpc"):
        call = auth_stub.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), metadata=(("x-request-id", request_id),))
        await call
        assert dict(await call.initial_metadata())["x-request-id"] == request_id
    records = [r for r in caplog.records if r.name == "kernel.rpc"]
    lines = [json.loads(JsonFormatter("auth").format(r)) for r in records]
    assert any(
        line.get("request_id") == request_id and line["method"].endswith("/GetSigningKeys") and line["code"] == "OK"
        for line in lines
    )


async def test_a_call_the_client_abandons_is_logged_and_counted_cancelled_not_ok(auth_stub, caplog):
    """kill -9 of a caller (tests/test_process_faults.py) or a passed deadline cancels the handler: its
    transaction rolls back, so the access log and the metrics must say CANCELLED."""
    request_id = f"abandoned-{uuid.uuid4().hex}"
    cancelled_before = _count("Register", "CANCELLED")
    with caplog.at_level(logging.INFO, logger="kernel.rpc"):
        call = auth_stub.Register(  # bcrypt (~0.25 s) keeps it in flight
            auth_pb2.RegisterRequest(email=f"gone-{uuid.uuid4().hex[:8]}@example.com", password="correct-horse"),
            metadata=(("x-request-id", request_id),),
        )
        await asyncio.sleep(0.05)
        call.cancel()
        for _ in range(50):
            lines = [r for r in caplog.records if r.name == "kernel.rpc" and r.request_id == request_id]
            if lines:
                break
            await asyncio.sleep(0.05)
    assert [json.loads(JsonFormatter("auth").format(r))["code"] for r in lines] == ["CANCELLED"]
    assert _count("Register", "CANCELLED") == cancelled_before + 1


def test_log_lines_carry_their_own_time_though_the_stamp_is_formatted_once_a_second():
    formatter = JsonFormatter("auth")
    times = []
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5):
        record = logging.LogRecord("kernel.rpc", logging.INFO, __file__, 1, "rpc", None, None)
        record.created, record.msecs = created, (created % 1) * 1000
        times.append(json.loads(formatter.format(record))["time"])
    assert times == ["2023-11-14T22:13:20.250Z", "2023-11-14T22:13:20.750Z", "2023-11-14T22:13:21.500Z"]
