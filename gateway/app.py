"""The aiohttp application: transcoding handler, /healthz, /openapi.json, CORS, request ids and the static site."""

import asyncio
import contextlib
import logging
import time

import grpc
from aiohttp import web
from google.rpc import code_pb2, status_pb2

from gateway import headers
from gateway.backends import Backends
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, http_status, internal_status, status_json, status_of
from gateway.openapi import OpenApiBuilder
from gateway.static import StaticSite
from gateway.transcode import Route, call_streaming, dumps
from kernel.context import request_id_var

log = logging.getLogger("gateway.http")

JSON = "application/json"
NDJSON = "application/x-ndjson"
CONFIG, BACKENDS = web.AppKey("config", GatewayConfig), web.AppKey("backends", Backends)
_OPENAPI, _REFRESHER = web.AppKey("openapi", OpenApiBuilder), web.AppKey("refresher", asyncio.Task)
_STATIC = web.AppKey("static", StaticSite)
_REQUEST_ID = web.RequestKey("request_id", str)
_EXPOSED_HEADERS = "X-Request-Id"
_PREFLIGHT_MAX_AGE = "600"


def _json_response(document, status: int = 200) -> web.Response:
    return web.Response(status=status, body=dumps(document), headers={"Content-Type": JSON})


def _error_response(status: status_pb2.Status, http: int, pool=None) -> web.Response:
    return _json_response(status_json(status, pool), http)


def _internal_error(request: web.Request) -> status_pb2.Status:
    """Logs the exception being handled, with the request id; the client gets the id only."""
    log.exception("unexpected error", extra={"fields": {"method": request.method, "path": request.path}})
    return internal_status(request[_REQUEST_ID])


def _cors_headers(config: GatewayConfig, request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin or not config.cors_origins:
        return {}
    if "*" in config.cors_origins:
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": _EXPOSED_HEADERS}
    if origin in config.cors_origins:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": _EXPOSED_HEADERS,
            "Vary": "Origin",
        }
    return {}


def _decorate(request: web.Request, response: web.StreamResponse) -> None:
    """The headers every answer carries: the request id, and CORS when the origin is allowed."""
    response.headers["X-Request-Id"] = request[_REQUEST_ID]
    response.headers.update(_cors_headers(request.app[CONFIG], request))


def _preflight(request: web.Request) -> web.Response:
    allowed = request.app[BACKENDS].router.allowed_methods(request.rel_url.raw_path)
    if not allowed:
        raise GatewayError(code_pb2.NOT_FOUND, f"No route for {request.path}", "ROUTE_NOT_FOUND")
    response = web.Response(status=204, headers={"Allow": ", ".join(allowed)})
    if _cors_headers(request.app[CONFIG], request):
        response.headers["Access-Control-Allow-Methods"] = ", ".join(allowed)
        response.headers["Access-Control-Allow-Headers"] = request.headers.get(
            "Access-Control-Request-Headers", "Authorization, Content-Type, X-Request-Id, Grpc-Timeout"
        )
        response.headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE
    return response


@web.middleware
async def _frame(request: web.Request, handler) -> web.StreamResponse:
    """Request id, preflight, errors as google.rpc.Status JSON, and one access log line per request."""
    started = time.perf_counter()
    request[_REQUEST_ID] = headers.request_id(request.headers)
    reset = request_id_var.set(request[_REQUEST_ID])
    try:
        try:
            response = _preflight(request) if request.method == "OPTIONS" else await handler(request)
        except GatewayError as error:
            response = _error_response(error.status, error.http)
            if error.http == 405:
                response.headers["Allow"] = ", ".join(
                    request.app[BACKENDS].router.allowed_methods(request.rel_url.raw_path)
                )
            elif error.http == 408:  # the rest of the body may still come: nothing else can follow on this connection
                response.force_close()
        except Exception:
            if request.writer.output_size:  # a stream's answer is under way: aiohttp cuts the connection
                raise
            response = _error_response(_internal_error(request), 500)
        if not response.prepared:
            _decorate(request, response)
        log.info(
            "http",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                }
            },
        )
        return response
    finally:
        request_id_var.reset(reset)


async def _transcode(request: web.Request) -> web.StreamResponse:
    config, backends = request.app[CONFIG], request.app[BACKENDS]
    raw_path = request.rel_url.raw_path
    match = backends.router.match(request.method, raw_path)
    if match is None:
        allowed = backends.router.allowed_methods(raw_path)
        if not allowed and request.method in ("GET", "HEAD") and _STATIC in request.app:
            # Only where no API route exists for any method: the API keeps its 405s and its JSON 404s.
            page = request.app[_STATIC].response(request.path, backends.router.namespaces())
            if page is not None:
                return page
        if allowed:
            raise GatewayError(
                code_pb2.UNIMPLEMENTED,
                f"{request.method} is not allowed on {request.path}",
                "METHOD_NOT_ALLOWED",
                http=405,
            )
        raise GatewayError(code_pb2.NOT_FOUND, f"No route for {request.method} {request.path}", "ROUTE_NOT_FOUND")
    route: Route = match.target
    # The headers first: a request they refuse is refused before its body is read.
    metadata = headers.call_metadata(request.headers, request[_REQUEST_ID], request.remote)
    timeout = headers.timeout_seconds(request.headers, config.default_timeout_seconds, config.max_timeout_seconds)
    body = await _read_body(request) if route.binder.body else b""
    message = route.binder.bind(body, request.rel_url.query, match.variables())
    if route.server_streaming:
        return await _stream(request, route, message, metadata, timeout)
    call = route.call(message, metadata=metadata, timeout=timeout)
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        answer = _error_response(status_of(error), http_status(error.code()), route.pool)
        answer.headers.update(headers.response_headers(error.initial_metadata(), error.trailing_metadata()))
        return answer
    answer = _json_response(route.to_json(response))
    answer.headers.update(headers.response_headers(await call.initial_metadata(), await call.trailing_metadata()))
    return answer


async def _read_body(request: web.Request) -> bytes:
    config = request.app[CONFIG]
    try:
        async with asyncio.timeout(config.body_timeout_seconds):  # a stalled upload must not hold the connection
            return await request.read()
    except TimeoutError:
        raise GatewayError(
            code_pb2.DEADLINE_EXCEEDED,
            f"The body did not arrive within {config.body_timeout_seconds:g} seconds.",
            "BODY_TIMEOUT",
            http=408,
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise GatewayError(
            code_pb2.RESOURCE_EXHAUSTED,
            f"The body is larger than {config.max_body_bytes} bytes.",
            "BODY_TOO_LARGE",
            http=413,
        ) from None


async def _stream(request: web.Request, route: Route, message, metadata, timeout: float) -> web.StreamResponse:
    """NDJSON: one message per line. Headers wait for the first message, so an early error keeps its status."""
    responses = call_streaming(route, message, metadata, timeout)
    try:
        first = await anext(responses, None)
    except grpc.aio.AioRpcError as error:
        await responses.aclose()
        return _error_response(status_of(error), http_status(error.code()), route.pool)
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    _decorate(request, response)
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(dumps(route.to_json(first)) + b"\n")
            async for item in responses:
                await response.write(dumps(route.to_json(item)) + b"\n")
    except Exception as error:  # the status line is out: the error is the last line
        status = status_of(error) if isinstance(error, grpc.aio.AioRpcError) else _internal_error(request)
        await response.write(dumps({"error": status_json(status, route.pool)}) + b"\n")
    finally:
        await responses.aclose()
    await response.write_eof()
    return response


async def _healthz(request: web.Request) -> web.Response:
    report = await request.app[BACKENDS].health()
    serving = bool(report) and all(b["status"] == "SERVING" and b["routed"] for b in report.values())
    return _json_response(
        {"status": "SERVING" if serving else "NOT_SERVING", "backends": report}, 200 if serving else 503
    )


async def _livez(request: web.Request) -> web.Response:
    """Liveness: the gateway answers (whatever its backends do; /healthz is readiness)."""
    return _json_response({"status": "SERVING"})


async def _openapi(request: web.Request) -> web.Response:
    return _json_response(request.app[_OPENAPI].document(request.app[BACKENDS]))


async def _start(app: web.Application) -> None:
    # grpc.aio channels belong to the loop they are made on: make them on the serving loop.
    app[BACKENDS] = Backends(app[CONFIG].backends, app[CONFIG].unbound_services)
    await app[BACKENDS].refresh()
    if app[CONFIG].rediscover_seconds > 0:
        app[_REFRESHER] = asyncio.create_task(app[BACKENDS].keep_refreshing(app[CONFIG].rediscover_seconds))


async def _stop(app: web.Application) -> None:
    if _REFRESHER in app:
        app[_REFRESHER].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[_REFRESHER]
    await app[BACKENDS].close()


def build_app(config: GatewayConfig) -> web.Application:
    """The gateway; backends are discovered when the application starts."""
    app = web.Application(middlewares=[_frame], client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[_OPENAPI] = OpenApiBuilder(config.descriptor_set)
    if config.static_dir:
        app[_STATIC] = StaticSite(config.static_dir)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    # The gateway's own endpoints come first, so a backend cannot shadow them.
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/livez", _livez)
    app.router.add_get("/openapi.json", _openapi)
    # Any character, a newline (%0A) included: aiohttp's own 404 for an unmatched path would be a 500 here.
    app.router.add_route("*", r"/{tail:[\s\S]*}", _transcode)
    return app
