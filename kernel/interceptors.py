"""Server interceptors: request context and access log, domain error mapping, authorization.

Each interceptor is an async context manager around the handler, so one wrapper serves unary and
streaming methods alike; each method's wrapped handler is made once, on its first call, and kept.
Order on the server: RequestContext (outermost), ErrorMapping, Authentication.
"""

import asyncio
import contextlib
import dataclasses
import inspect
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from kernel import access, metrics, status
from kernel.context import client_address_var, principal_var, request_id_var
from kernel.errors import DomainError, InvalidArgument, Unauthenticated
from kernel.tokens import TokenVerifier

log = logging.getLogger("kernel.rpc")

# Peers whose x-forwarded-for is believed: the gateway runs on loopback locally and on the cluster network.
TRUSTED_PROXY_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
)
MAX_ACTOR_LENGTH = 64
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
# Open to everyone so grpcurl and Kubernetes probes work without a token.
OPEN_SERVICES = ("/grpc.reflection.", "/grpc.health.v1.Health/")
# The scope of a method open to everyone: stateless, so one instance serves every call.
_ADMITTED = contextlib.nullcontext()


class CachingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once: grpc.aio runs intercept_service for every call, but the handler a
    server's continuation returns for a method never changes, so the wrapped one is kept per method."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # an unknown method: not cached, so made-up names cannot grow the cache
                return None
            wrapped = self._handlers[method] = self.wrap(method, handler)
        return wrapped


class ScopedInterceptor(CachingInterceptor):
    """Runs `scope(method, context)` around every call of the methods it applies to."""

    def applies_to(self, method: str) -> bool:
        return True

    def scope(self, method: str, context: grpc.aio.ServicerContext) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    def wrap(self, method, handler):
        if not self.applies_to(method):
            return handler
        return _wrap(handler, lambda context: self.scope(method, context))


def _parser(deserialize) -> Callable:
    def parse(raw: bytes):
        try:
            return deserialize(raw)
        except Exception:  # DecodeError and friends: say what is wrong, not where in our code
            raise InvalidArgument.field(
                "request", "is not a valid protobuf message for this method", reason="MALFORMED_MESSAGE"
            ) from None

    return parse


def _wrap(handler: grpc.RpcMethodHandler, scope, parse_inside: bool = False) -> grpc.RpcMethodHandler:
    """The handler run inside scope(context). With parse_inside, requests reach it as bytes and are parsed
    only inside the scope (after the caller was admitted), a malformed one refused as INVALID_ARGUMENT."""
    deserialize = handler.request_deserializer
    parse = _parser(deserialize) if parse_inside and deserialize else (lambda request: request)
    codec = {
        "request_deserializer": None if parse_inside else deserialize,
        "response_serializer": handler.response_serializer,
    }

    async def parse_all(requests):
        async for request in requests:
            yield parse(request)

    # On the aio server the behaviours are coroutine functions or async generators; grpc's stubs type
    # RpcMethodHandler for the sync server (plain results and iterators), so they are taken as they come.
    unary: Callable[..., Any] | None = handler.unary_unary
    client_streaming: Callable[..., Any] | None = handler.stream_unary
    behavior: Callable[..., Any] | None = handler.unary_stream or handler.stream_stream
    if unary:

        async def unary_unary(request, context):
            async with scope(context):
                return await unary(parse(request), context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if client_streaming:

        async def stream_unary(requests, context):
            async with scope(context):
                return await client_streaming(parse_all(requests), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    if behavior is None:
        raise ValueError("A method handler without a behaviour")
    read = parse if handler.unary_stream else parse_all
    streaming: Callable[..., object]
    if inspect.isasyncgenfunction(behavior):

        async def generator(request_or_iterator, context) -> AsyncIterator:
            async with scope(context):
                async for response in behavior(read(request_or_iterator), context):
                    yield response

        streaming = generator
    else:  # a coroutine that writes its responses with context.write (e.g. the health service's Watch)

        async def writer(request_or_iterator, context) -> None:
            async with scope(context):
                await behavior(read(request_or_iterator), context)

        streaming = writer
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **codec)
    return grpc.stream_stream_rpc_method_handler(streaming, **codec)


def _peer_address(peer: str) -> str:
    """The IP of a gRPC peer string ("ipv4:10.0.0.7:5123", "ipv6:[::1]:5123"); "" for other transports."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return ""


def _is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in TRUSTED_PROXY_NETWORKS)


def client_address_of(context: grpc.aio.ServicerContext) -> str:
    """The person's client: the last x-forwarded-for hop when the peer is a trusted proxy, else the peer."""
    peer = _peer_address(context.peer() or "")
    forwarded = _metadata(context, "x-forwarded-for")
    if forwarded and _is_trusted_proxy(peer):
        hop = forwarded.rpartition(",")[2].strip()[:64]
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(hop))
    return peer


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):  # only binary (-bin) keys carry bytes
            return value
    return ""


class RequestContext(ScopedInterceptor):
    """Takes the caller's x-request-id (or makes one), echoes it, logs and measures every call."""

    def __init__(self, component: str):
        super().__init__()
        self.component = component

    def applies_to(self, method: str) -> bool:
        return not method.startswith(OPEN_SERVICES)  # probes and reflection would drown the log

    @contextlib.asynccontextmanager
    async def scope(self, method, context):
        request_id = _metadata(context, "x-request-id")
        if not REQUEST_ID.match(request_id):  # bounded before it reaches a log line or another service
            request_id = secrets.token_hex(16)  # as uuid4().hex looks, without building a UUID per call
        token = request_id_var.set(request_id)
        caller = principal_var.set(None)  # set by Authentication, read here for the access log, reset here
        client = client_address_var.set(lambda: client_address_of(context))
        await context.send_initial_metadata((("x-request-id", request_id),))
        started = time.perf_counter()
        outcome = None
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away or its deadline passed: nothing was answered (and a transaction in
            # progress rolled back), which the log and the metrics must not count as OK.
            outcome = grpc.StatusCode.CANCELLED
            raise
        finally:
            code = outcome or context.code() or grpc.StatusCode.OK
            code_name = getattr(code, "name", str(code))
            seconds = time.perf_counter() - started
            metrics.record_rpc(self.component, method, code_name, seconds)
            principal = principal_var.get()
            fields = {"method": method, "code": code_name, "duration_ms": round(seconds * 1000, 2)}
            if principal is not None:
                fields["user_id"] = principal.user_id
            log.info("rpc", extra={"fields": fields})
            principal_var.reset(caller)
            client_address_var.reset(client)
            request_id_var.reset(token)


class ErrorMapping(ScopedInterceptor):
    """The one place where domain exceptions become rich google.rpc.Status errors."""

    def __init__(self, domain: str):
        super().__init__()
        self.domain = domain

    @contextlib.asynccontextmanager
    async def scope(self, method, context):
        try:
            yield
        except DomainError as error:
            await context.abort_with_status(status.from_domain_error(error, self.domain))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error", extra={"fields": {"method": method}})
            await context.abort_with_status(status.internal(request_id_var.get(), self.domain))


class Authentication(CachingInterceptor):
    """Admits each call by its method's access rule (kernel.access), then parses its request.

    The bearer token is verified locally and checked against the rule before a byte of the message is
    parsed; reflection and health are open so grpcurl and probes work without a token. The caller is set
    for the domain, which checks ownership. A person's call may not claim to act for another (x-actor-id
    is believed only from a service).
    """

    def __init__(self, verifier: TokenVerifier, rules: dict[str, access.Rule]):
        super().__init__()
        self.verifier = verifier
        self.rules = rules

    def wrap(self, method, handler):
        rule = access.OPEN if method.startswith(OPEN_SERVICES) else self.rules.get(method, access.NO_RULE)
        if rule.open:  # nothing to admit: only the request is parsed inside, so a malformed one is mapped
            return _wrap(handler, lambda context: _ADMITTED, parse_inside=True)
        return _wrap(handler, lambda context: self._admit(rule, context), parse_inside=True)

    @contextlib.asynccontextmanager
    async def _admit(self, rule: access.Rule, context):
        scheme, _, token = _metadata(context, "authorization").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Send an 'authorization: Bearer <token>' header.", reason="MISSING_TOKEN")
        principal = await self.verifier.verify(token.strip())
        rule.check(principal)
        if principal.is_service:
            principal = dataclasses.replace(principal, actor_id=_actor(context))
        # Each call runs in its own task with its own copy of the context; RequestContext resets it for the log.
        principal_var.set(principal)
        yield


def _actor(context) -> str:
    """The person a service's call acts for (x-actor-id), when it is a plausible id."""
    actor = _metadata(context, "x-actor-id")
    return actor if 0 < len(actor) <= MAX_ACTOR_LENGTH and actor.isascii() and actor.isprintable() else ""
