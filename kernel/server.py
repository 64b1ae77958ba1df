"""The gRPC server bootstrap shared by every service.

grpc.aio with our interceptors, server reflection under both v1alpha and v1, the standard health
service, and a graceful stop: NOT_SERVING first, a short drain, then in-flight calls finish.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha

from coupons.reflection.v1 import reflection_pb2 as reflection_v1
from kernel import access, workers
from kernel.interceptors import Authentication, ErrorMapping, RequestContext
from kernel.tokens import TokenVerifier

log = logging.getLogger("kernel.server")

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# Health names: "" and each service are readiness (NOT_SERVING while the database cannot be reached or
# the server stops); LIVENESS stays SERVING while the process answers, for the liveness probe.
LIVENESS = "liveness"
READINESS_INTERVAL_SECONDS = 2.0
# Requests are refused above 4 MiB before anything is parsed (large uploads are streamed in chunks);
# answers may be larger (a bulk assignment's codes).
MAX_RECEIVE_BYTES = 4 * 1024 * 1024
MAX_SEND_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
]


@dataclass
class ServiceSpec:
    """What a component adds to the shared server."""

    component: str
    service_names: tuple[str, ...]  # whose methods' access rules (kernel.access) the server enforces
    register: Callable[[grpc.aio.Server], None]
    # Whether what the service needs (its database) answers now; polled for readiness.
    ready: Callable[[], Awaitable[bool]] | None = None
    # Jobs that run beside the server from start to stop (the retention purge), each a coroutine function;
    # with WORKERS > 1 only the first worker runs them (kernel/workers.py).
    background: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = ()


def _register_reflection_v1(server: grpc.aio.Server, names: tuple[str, ...]) -> None:
    # grpcio-reflection only serves v1alpha; v1 is the same wire format, so the same servicer answers both.
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_v1alpha.ServerReflectionRequest.FromString,
        response_serializer=reflection_v1alpha.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )
    assert "ServerReflection" in reflection_v1.DESCRIPTOR.services_by_name  # keeps v1 in the descriptor pool


class _Health(health.aio.HealthServicer):
    """The standard health service with List too (grpcio-health-checking leaves it unimplemented)."""

    async def List(self, request, context):
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status) for name, status in self._server_status.items()
            }
        )


class GrpcServer:
    def __init__(
        self,
        spec: ServiceSpec,
        verifier: TokenVerifier,
        drain_seconds: float = 0.5,
        revocation_poll_seconds: float = 2.0,
    ):
        self.spec = spec
        self.verifier = verifier
        self.drain_seconds = drain_seconds
        self.revocation_poll_seconds = revocation_poll_seconds
        rules = access.table(spec.service_names)
        unruled = sorted(method for method, rule in rules.items() if not rule.callers)
        if unruled:
            raise SystemExit(f"methods without an access rule (coupons.access.v1.access): {', '.join(unruled)}")
        self.server = grpc.aio.server(
            interceptors=[
                RequestContext(spec.component),
                ErrorMapping(domain=f"{spec.component}.coupons"),
                Authentication(verifier, rules),
            ],
            # Only a supervisor's workers share a port; anyone else finds a taken port refused, not shared.
            # Their supervisor checked it was free before it spawned them (kernel/workers.py).
            options=[*SERVER_OPTIONS, ("grpc.so_reuseport", int(workers.is_worker()))],
        )
        spec.register(self.server)
        self.health = _Health()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (*spec.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)
        reflection.enable_server_reflection(names, self.server)
        _register_reflection_v1(self.server, names)
        self.port = 0
        self._stopped = asyncio.Event()
        self._background: list[asyncio.Task] = []

    async def start(self, address: str) -> int:
        if self.verifier.watches_revocations:
            self._background.append(asyncio.create_task(self.verifier.keep_revocations(self.revocation_poll_seconds)))
        self.port = self.server.add_insecure_port(address)
        await self.server.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        ready = self.spec.ready is None or await self.spec.ready()
        await self._set_ready(ready)
        if self.spec.ready is not None:
            self._background.append(asyncio.create_task(self._watch_readiness(self.spec.ready, ready)))
        jobs = self.spec.background if workers.runs_background_jobs() else ()  # one worker runs them
        self._background += [asyncio.create_task(job()) for job in jobs]
        fields = {"component": self.spec.component, "port": self.port, "background_jobs": len(jobs)}
        log.info("serving", extra={"fields": fields})
        return self.port

    async def _set_ready(self, ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.spec.service_names):
            await self.health.set(name, status)  # ignored once a graceful shutdown began

    async def _watch_readiness(self, check: Callable[[], Awaitable[bool]], ready: bool) -> None:
        while True:
            await asyncio.sleep(READINESS_INTERVAL_SECONDS)
            now = await check()
            if now != ready:
                log.warning("readiness", extra={"fields": {"component": self.spec.component, "ready": now}})
                await self._set_ready(now)
                ready = now

    async def stop(self, grace_seconds: float) -> None:
        """NOT_SERVING, a drain so probes and balancers notice, then in-flight calls get grace_seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.drain_seconds)
        await self.server.stop(grace_seconds)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)  # unwound before cleanup closes engines
        log.info("stopped", extra={"fields": {"component": self.spec.component}})

    async def wait_stopped(self) -> None:
        await self.server.wait_for_termination()
