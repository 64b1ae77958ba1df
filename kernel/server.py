"""The gRPC server bootstrap shared by every service.

grpc.aio with our interceptors, server reflection under both v1alpha and v1, the standard health
service, and a graceful stop: NOT_SERVING first, a short drain, then in-flight calls finish.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha

from coupons.reflection.v1 import reflection_pb2 as reflection_v1
from kernel.interceptors import Authentication, ErrorMapping, RequestContext
from kernel.tokens import TokenVerifier

log = logging.getLogger("kernel.server")

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


@dataclass
class ServiceSpec:
    """What a component adds to the shared server."""

    component: str
    service_names: tuple[str, ...]
    register: Callable[[grpc.aio.Server], None]
    public_methods: frozenset[str] = field(default_factory=frozenset)


def _register_reflection_v1(server: grpc.aio.Server, names: tuple[str, ...]) -> None:
    # grpcio-reflection only serves v1alpha; v1 is the same wire format, so the same servicer answers both.
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_v1alpha.ServerReflectionRequest.FromString,
        response_serializer=reflection_v1alpha.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": handler}),))
    assert reflection_v1.DESCRIPTOR.services_by_name["ServerReflection"]  # keeps v1 in the descriptor pool


class GrpcServer:
    def __init__(self, spec: ServiceSpec, verifier: TokenVerifier, drain_seconds: float = 0.5):
        self.spec = spec
        self.drain_seconds = drain_seconds
        self.server = grpc.aio.server(
            interceptors=[
                RequestContext(spec.component),
                ErrorMapping(domain=f"{spec.component}.coupons"),
                Authentication(verifier, spec.public_methods),
            ],
            options=SERVER_OPTIONS,
        )
        spec.register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (*spec.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)
        reflection.enable_server_reflection(names, self.server)
        _register_reflection_v1(self.server, names)
        self.port = 0
        self._stopped = asyncio.Event()

    async def start(self, address: str) -> int:
        self.port = self.server.add_insecure_port(address)
        await self.server.start()
        for name in ("", *self.spec.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"fields": {"component": self.spec.component, "port": self.port}})
        return self.port

    async def stop(self, grace_seconds: float) -> None:
        """NOT_SERVING, a drain so probes and balancers notice, then in-flight calls get grace_seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.drain_seconds)
        await self.server.stop(grace_seconds)
        log.info("stopped", extra={"fields": {"component": self.spec.component}})

    async def wait_stopped(self) -> None:
        await self.server.wait_for_termination()
