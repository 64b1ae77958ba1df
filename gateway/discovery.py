"""What a backend serves, read through gRPC server reflection (v1, falling back to v1alpha).

One reflection stream per discovery: list the services, ask for the file defining each, then any
dependency the server did not send along. The files go into a descriptor pool of the backend's own,
so two backends may carry different versions of a shared file.
"""

import asyncio
import hashlib
import logging
from dataclasses import dataclass

import grpc
from google.api import annotations_pb2  # noqa: F401  registers the google.api.http option for parsing
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as reflection

from coupons.access.v1 import access_pb2  # noqa: F401  registers the (coupons.access.v1.access) option too

REFLECTION_METHODS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",  # same messages, older name
)
# Reflection is a bidirectional stream the gateway cannot transcode; it stays gRPC-only.
NOT_ROUTED_PREFIX = "grpc.reflection."

log = logging.getLogger("gateway.discovery")


class DiscoveryError(Exception):
    pass


@dataclass(frozen=True)
class Schema:
    """A backend's services and every file they need, parsed once per discovery."""

    services: tuple[str, ...]  # full names of the services to route
    files: dict[str, descriptor_pb2.FileDescriptorProto]
    pool: descriptor_pool.DescriptorPool
    fingerprint: str  # changes when any descriptor changes

    def service_proto(self, full_name: str) -> descriptor_pb2.ServiceDescriptorProto:
        """The service as declared, with its method options (where the http rules are)."""
        file_name = self.pool.FindServiceByName(full_name).file.name
        short_name = full_name.rpartition(".")[2]
        return next(s for s in self.files[file_name].service if s.name == short_name)


class _ReflectionStream:
    def __init__(self, call):
        self.call = call

    async def ask(self, **request) -> reflection.ServerReflectionResponse:
        await self.call.write(reflection.ServerReflectionRequest(**request))
        response = await self.call.read()
        if response is grpc.aio.EOF:
            raise DiscoveryError("the reflection stream ended early")
        if response.HasField("error_response"):
            raise DiscoveryError(f"reflection refused {request}: {response.error_response.error_message}")
        return response


async def _files_of(stream: _ReflectionStream, services: list[str]) -> tuple[dict, list[str]]:
    """The files defining the services and all their dependencies, and the services that could be described."""
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    described = []

    def keep(response):
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files.setdefault(proto.name, proto)

    for service in services:
        try:
            keep(await stream.ask(file_containing_symbol=service))
            described.append(service)
        except DiscoveryError as error:  # listed but not describable: leave it out, keep the rest
            log.warning("service not described", extra={"fields": {"service": service, "error": str(error)}})
    missing = {d for f in files.values() for d in f.dependency} - files.keys()
    while missing:
        keep(await stream.ask(file_by_filename=missing.pop()))
        missing = {d for f in files.values() for d in f.dependency} - files.keys()
    return files, described


def _pool_of(files: dict[str, descriptor_pb2.FileDescriptorProto]) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        added.add(name)
        for dependency in files[name].dependency:
            add(dependency)
        pool.Add(files[name])

    for name in sorted(files):
        add(name)
    return pool


async def fetch_schema(channel: grpc.aio.Channel, timeout: float = 10.0) -> Schema:
    for method in REFLECTION_METHODS:
        call = channel.stream_stream(
            method,
            request_serializer=reflection.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection.ServerReflectionResponse.FromString,
        )(timeout=timeout)
        try:
            stream = _ReflectionStream(call)
            listed = await stream.ask(list_services="")
            files, services = await _files_of(stream, sorted(s.name for s in listed.list_services_response.service))
            await call.done_writing()
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                continue
            raise DiscoveryError(f"reflection failed: {error.code().name} {error.details()}") from error
        finally:
            call.cancel()
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(files[name].SerializeToString(deterministic=True))
        digest.update("\n".join(services).encode())
        routed = tuple(s for s in services if not s.startswith(NOT_ROUTED_PREFIX))
        return Schema(routed, files, _pool_of(files), digest.hexdigest())
    raise DiscoveryError("the backend serves no reflection service")


async def fetch_all(channels: dict[str, grpc.aio.Channel], timeout: float = 10.0) -> dict[str, Schema | BaseException]:
    """Discovers every backend at once; a backend that does not answer gets its exception instead."""
    names = list(channels)
    results = await asyncio.gather(*(fetch_schema(channels[n], timeout) for n in names), return_exceptions=True)
    return dict(zip(names, results, strict=True))
