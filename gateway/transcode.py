"""Routes built from a backend's descriptors, and the calls that run them.

Everything per method (message classes, binder, gRPC multicallable, JSON options) is prepared when the
routes are built, so a request only matches, binds, calls and prints.
"""

import json
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from coupons.access.v1 import access_pb2
from gateway import templates
from gateway.binding import RequestBinder
from gateway.discovery import Schema
from gateway.routes import ConflictError, Router

log = logging.getLogger("gateway.routes")

_HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_CALLERS = access_pb2.Caller.DESCRIPTOR.values_by_number


@dataclass(frozen=True)
class Route:
    backend: str
    http_method: str
    template: templates.Template
    grpc_method: str  # /package.Service/Method
    method: descriptor.MethodDescriptor  # for the OpenAPI document
    binder: RequestBinder
    response_body: str  # "" for the whole response message
    server_streaming: bool
    call: Callable[..., Any]  # grpc.aio UnaryUnaryMultiCallable or UnaryStreamMultiCallable
    pool: descriptor_pool.DescriptorPool
    callers: tuple[str, ...]  # the access rule's caller kinds, for the OpenAPI document

    def to_json(self, response: Message) -> object:
        """Canonical JSON with proto field names; fields without presence are always printed (see docs).
        With a response_body, that field's JSON value (an object, a list or a scalar)."""
        document = json_format.MessageToDict(
            response,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            descriptor_pool=self.pool,
        )
        return document.get(self.response_body) if self.response_body else document


def dumps(document) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _bindings(rule: http_pb2.HttpRule) -> list[tuple[str, str, str, str]]:
    """(http method, path, body, response_body) of a rule and its additional bindings."""
    found = []
    for current in (rule, *rule.additional_bindings):
        kind = current.WhichOneof("pattern")
        if kind in _HTTP_METHODS:
            found.append((kind.upper(), getattr(current, kind), current.body, current.response_body))
        elif kind == "custom":
            found.append((current.custom.kind.upper(), current.custom.path, current.body, current.response_body))
    return found


def _callers(options) -> tuple[int, ...]:
    """The callers a method's (coupons.access.v1.access) rule admits; empty when it declares none."""
    return tuple(options.Extensions[access_pb2.access].callers) if options.HasExtension(access_pb2.access) else ()


def _service_only(callers: tuple[int, ...]) -> bool:
    """Only other services may call it: not for the web, whatever its http rule says."""
    return set(callers) == {access_pb2.CALLER_SERVICE}


def _caller_names(callers: tuple[int, ...]) -> tuple[str, ...]:
    # A caller kind newer than the gateway's copy of access.proto is shown by number.
    return tuple(_CALLERS[c].name if c in _CALLERS else str(c) for c in callers)


def routes_of(
    backend: str, schema: Schema, channel: grpc.aio.Channel, claimed: set[str], unbound: tuple[str, ...] = ()
) -> list[Route]:
    """Every HTTP route a backend's methods offer; client- and bidi-streaming methods stay gRPC-only.

    A service already in `claimed` (served by an earlier backend, e.g. grpc.health.v1.Health) is skipped.
    Methods only other services may call are never routed, nor any method of a service declared
    `(coupons.access.v1.internal)`: such services have no route and no place in the OpenAPI document.
    Unannotated methods are routed only for the services in `unbound` (grpc-gateway's
    generate_unbound_methods).
    """
    routes: list[Route] = []
    for service_name in schema.services:
        if service_name in claimed:
            continue
        claimed.add(service_name)
        # protoc's .pyi types an extension as a plain FieldDescriptor, types-protobuf wants its own subclass.
        if schema.service_proto(service_name).options.Extensions[access_pb2.internal]:  # type: ignore[index]
            continue  # declared internal: for the suite's own services only
        service = schema.pool.FindServiceByName(service_name)
        declared = {m.name: m.options for m in schema.service_proto(service_name).method}
        for method in service.methods:
            options = declared[method.name]
            callers = _callers(options)
            if method.client_streaming or _service_only(callers):
                continue
            rule = options.Extensions[annotations_pb2.http] if options.HasExtension(annotations_pb2.http) else None
            bindings = _bindings(rule) if rule else []
            grpc_method = f"/{service_name}/{method.name}"
            if not bindings and service_name in unbound:
                bindings = [("POST", grpc_method, "*", "")]
            for http_method, path, body, response_body in bindings:
                try:
                    routes.append(
                        _route(
                            backend,
                            schema.pool,
                            channel,
                            method,
                            grpc_method,
                            http_method,
                            path,
                            body,
                            response_body,
                            _caller_names(callers),
                        )
                    )
                except (templates.TemplateError, KeyError) as error:
                    log.warning(
                        "route skipped", extra={"fields": {"method": grpc_method, "path": path, "error": str(error)}}
                    )
    return routes


def _route(backend, pool, channel, method, grpc_method, http_method, path, body, response_body, callers) -> Route:
    template = templates.parse(path)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    if response_body and response_body not in method.output_type.fields_by_name:
        raise KeyError(f"response_body {response_body!r} is not a field of {method.output_type.full_name}")
    binder = RequestBinder(
        request_class, [v.field_path for v in template.variables], body, infer_update_mask=http_method == "PATCH"
    )
    codec = {"request_serializer": request_class.SerializeToString, "response_deserializer": response_class.FromString}
    call = (channel.unary_stream if method.server_streaming else channel.unary_unary)(grpc_method, **codec)
    return Route(
        backend,
        http_method,
        template,
        grpc_method,
        method,
        binder,
        response_body,
        method.server_streaming,
        call,
        pool,
        callers,
    )


def build_router(routes: list[Route]) -> tuple[Router, list[Route]]:
    """The router and the routes it holds: the first route wins a conflict; the loser is logged."""
    router, accepted = Router(), []
    for route in routes:
        try:
            router.add(route.http_method, route.template, route)
            accepted.append(route)
        except ConflictError as error:
            log.warning("route conflict", extra={"fields": {"method": route.grpc_method, "error": str(error)}})
    return router, accepted


async def call_streaming(route: Route, request: Message, metadata, timeout: float) -> AsyncGenerator[Message, None]:
    call = route.call(request, metadata=metadata, timeout=timeout)
    try:
        async for response in call:
            yield response
    finally:
        call.cancel()  # the HTTP client went away, or the stream ended: nothing left to wait for
