"""The backends: one channel each, their discovered descriptors, the routing table built from them."""

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2

from gateway.discovery import Schema, fetch_all
from gateway.routes import Router
from gateway.transcode import Route, build_router, routes_of
from kernel.grpc_clients import channel as backend_channel

log = logging.getLogger("gateway.backends")

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Backends:
    def __init__(self, addresses: dict[str, str], unbound_services: tuple[str, ...] = ()):
        self.addresses = dict(addresses)
        self.unbound_services = unbound_services  # whose unannotated methods are routed
        self.channels = {name: backend_channel(address) for name, address in addresses.items()}
        self.schemas: dict[str, Schema] = {}
        self.routes: list[Route] = []
        self.router = Router()
        self.generation = 0  # bumped on every routing change; the OpenAPI document is cached by it
        self._health_checks = {
            name: channel.unary_unary(
                _HEALTH_CHECK,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            for name, channel in self.channels.items()
        }

    async def refresh(self) -> bool:
        """Re-reads every backend's descriptors; rebuilds the routes when any changed. Returns whether they did.

        A backend that does not answer keeps its last known routes (its calls fail with 503 meanwhile).
        """
        found = await fetch_all(self.channels)
        schemas = dict(self.schemas)
        for name, result in found.items():
            if isinstance(result, BaseException):  # gather's return_exceptions also returns a CancelledError
                log.warning("backend not discovered", extra={"fields": {"backend": name, "error": repr(result)}})
            else:
                schemas[name] = result
        fingerprints = {name: s.fingerprint for name, s in schemas.items()}
        if fingerprints == {name: s.fingerprint for name, s in self.schemas.items()}:
            return False
        claimed: set[str] = set()
        routes = [
            route
            for name in self.channels
            if name in schemas
            for route in routes_of(name, schemas[name], self.channels[name], claimed, self.unbound_services)
        ]
        self.router, self.routes = build_router(routes)
        self.schemas = schemas
        self.generation += 1
        log.info("routes built", extra={"fields": {"backends": sorted(schemas), "routes": len(routes)}})
        return True

    @property
    def undiscovered(self) -> list[str]:
        return [name for name in self.channels if name not in self.schemas]

    async def keep_refreshing(self, every_seconds: float) -> None:
        while True:
            # A backend not yet seen (started after the gateway) is asked again within a second.
            await asyncio.sleep(min(every_seconds, 1.0) if self.undiscovered else every_seconds)
            try:
                await self.refresh()
            except Exception:  # a bad descriptor must not stop later refreshes
                log.exception("refresh failed")

    async def health(self, timeout: float = 2.0) -> dict[str, dict[str, str | bool]]:
        """Each backend's overall gRPC health status (the empty service name)."""

        async def check(name: str) -> tuple[str, str]:
            try:
                response = await self._health_checks[name](health_pb2.HealthCheckRequest(service=""), timeout=timeout)
                return name, health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.aio.AioRpcError as error:
                return name, f"UNREACHABLE ({error.code().name})"

        results = await asyncio.gather(*(check(name) for name in self.channels))
        return {
            name: {"address": self.addresses[name], "status": status, "routed": name in self.schemas}
            for name, status in results
        }

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
