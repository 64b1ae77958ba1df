"""The shared server: reflection over v1alpha and v1, health, and a graceful stop."""

import asyncio
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from coupons.reflection.v1 import reflection_pb2 as v1
from coupons.reflection.v1 import reflection_pb2_grpc as v1_grpc
from services.auth.app import build
from tests.support import settings_for

EXPECTED = {
    "coupons.auth.v1.AuthService",
    "coupons.auth.v1.AuthInternalService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
}


async def _list_services(stub, messages) -> set[str]:
    responses = stub.ServerReflectionInfo(iter([messages.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        return {s.name for s in response.list_services_response.service}


async def _file_for(stub, messages, symbol: str) -> list[bytes]:
    responses = stub.ServerReflectionInfo(iter([messages.ServerReflectionRequest(file_containing_symbol=symbol)]))
    async for response in responses:
        return list(response.file_descriptor_response.file_descriptor_proto)


async def test_reflection_lists_services_over_v1alpha_and_v1(auth_channel):
    for stub, messages in (
        (v1alpha_grpc.ServerReflectionStub(auth_channel), v1alpha),
        (v1_grpc.ServerReflectionStub(auth_channel), v1),
    ):
        assert await _list_services(stub, messages) == EXPECTED
        assert await _file_for(stub, messages, "coupons.auth.v1.AuthService")


async def test_health_reports_serving(auth_channel):
    health = health_pb2_grpc.HealthStub(auth_channel)
    for service in ("", "coupons.auth.v1.AuthService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_graceful_stop_reports_not_serving_and_finishes_in_flight_calls(database_url, signing_key):
    server, cleanup = await build(settings_for("auth", database_url), signing_key)
    server.drain_seconds = 1.0
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        # Registration hashes with bcrypt (~0.25 s): in flight when the stop begins, it must still finish.
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        in_flight = asyncio.ensure_future(
            auth.Register(
                auth_pb2.RegisterRequest(email=f"late-{uuid.uuid4().hex[:8]}@example.com", password="correct-horse")
            )
        )
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(grace_seconds=5))

        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (await in_flight).user.id
        await stopping
    finally:
        await channel.close()
        await cleanup()
