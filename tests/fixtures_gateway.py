"""Fixtures for the gateway tests: in-process gateways pointed at any backends, and a test-only backend.

`start_gateway({"auth": addr, "books": addr, ...})` returns the base URL of a gateway on a free port;
every gateway started is stopped at the end of the session. The echo backend serves a service compiled
from ECHO_PROTO at test time, so routing, binding, streaming and every error code are tested through a
real reflection-discovered backend that no gateway code knows about.
"""

import asyncio
import pathlib
import tempfile

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from gateway.app import build_app
from gateway.config import GatewayConfig

ECHO_PROTO = """
syntax = "proto3";

// Test-only service: echoes what it was sent, so a test sees how the gateway bound the request.
package gatewaytest.v1;

import "coupons/access/v1/access.proto";
import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";

// EchoService exists only in the gateway tests.
service EchoService {
  // Answers with the request as bound from path, query and body, and the call's metadata in labels.
  rpc Echo(EchoRequest) returns (EchoRequest) {
    option (google.api.http) = {
      get: "/v1/echo/{id}"
      additional_bindings {post: "/v1/echo/{id}" body: "nested"}
      additional_bindings {get: "/v1/{name=shelves/*/books/*}"}
      additional_bindings {get: "/v1/files/{path=**}"}
      additional_bindings {post: "/v1/echo/{id}:archive" body: "*"}
      additional_bindings {get: "/v1/echo/{id}/nested" response_body: "nested"}
      additional_bindings {patch: "/v1/nested/{nested.id}" body: "nested"}
    };
  }
  // Fails with the gRPC code named by id, with an ErrorInfo detail.
  rpc Fail(EchoRequest) returns (EchoRequest) {
    option (google.api.http) = {get: "/v1/fail/{id}"};
  }
  // Streams size messages, then fails with the code named by id unless it is empty.
  rpc Count(EchoRequest) returns (stream EchoRequest) {
    option (google.api.http) = {get: "/v1/count"};
  }
  // Answers after size milliseconds.
  rpc Wait(EchoRequest) returns (EchoRequest) {
    option (google.api.http) = {get: "/v1/wait"};
  }
  // No annotation: reachable at POST /gatewaytest.v1.EchoService/Unannotated when the service is listed.
  rpc Unannotated(EchoRequest) returns (EchoRequest);
  // Annotated but only for other services: never routed.
  rpc ServiceOnly(EchoRequest) returns (EchoRequest) {
    option (google.api.http) = {get: "/v1/service-only/{id}"};
    option (coupons.access.v1.access) = {callers: CALLER_SERVICE};
  }
  // For admins and services: routed, and its rule shown in the OpenAPI document.
  rpc AdminOrService(EchoRequest) returns (EchoRequest) {
    option (google.api.http) = {get: "/v1/admin-or-service/{id}"};
    option (coupons.access.v1.access) = {callers: [CALLER_ADMIN, CALLER_SERVICE]};
  }
  // Unannotated and only for other services: not routed even when the service is listed.
  rpc UnannotatedServiceOnly(EchoRequest) returns (EchoRequest) {
    option (coupons.access.v1.access) = {callers: CALLER_SERVICE};
  }
}

// Every method only for other services: an internal service, never routed nor documented.
service InternalService {
  rpc Ping(EchoRequest) returns (EchoRequest) {
    option (google.api.http) = {get: "/v1/internal/ping"};
    option (coupons.access.v1.access) = {callers: CALLER_SERVICE};
  }
  rpc Unannotated(EchoRequest) returns (EchoRequest) {
    option (coupons.access.v1.access) = {callers: CALLER_SERVICE};
  }
}

enum Color {
  COLOR_UNSPECIFIED = 0;
  RED = 1;
  GREEN = 2;
}

message Nested {
  string id = 1;
  int64 amount = 2;
  repeated string tags = 3;
}

message EchoRequest {
  // Where the echo comes from.
  string id = 1;
  string name = 2;
  string path = 3;
  int32 size = 4;
  bool flag = 5;
  Color color = 6;
  repeated string tags = 7;
  repeated Color colors = 8;
  Nested nested = 9;
  google.protobuf.Timestamp since = 10;
  map<string, string> labels = 11;
  optional string note = 12;
}
"""
ECHO_SERVICE = "gatewaytest.v1.EchoService"
INTERNAL_SERVICE = "gatewaytest.v1.InternalService"
PROTOS = pathlib.Path(__file__).resolve().parent.parent / "protos"  # for coupons/access/v1/access.proto


def compile_proto(source: str, directory: pathlib.Path) -> pathlib.Path:
    """Compiles one .proto text into a descriptor set with imports and comments; returns its path."""
    import google.api
    import grpc_tools
    from grpc_tools import protoc

    (directory / "test.proto").write_text(source)
    includes = [
        directory,
        PROTOS,
        pathlib.Path(google.api.__path__[0]).parent.parent,
        pathlib.Path(grpc_tools.__file__).parent / "_proto",
    ]
    out = directory / "test.binpb"
    code = protoc.main(
        [
            "protoc",
            *(f"-I{d}" for d in includes),
            f"--descriptor_set_out={out}",
            "--include_imports",
            "--include_source_info",
            "test.proto",
        ]
    )
    assert code == 0, "the test proto does not compile"
    return out


def pool_of(descriptor_set: pathlib.Path) -> descriptor_pool.DescriptorPool:
    """The compiled files, plus the health service's, so reflection can describe both."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file:
        pool.Add(file)
    health_file = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(health_file)
    pool.Add(health_file)
    return pool


def _failure(code_name: str, message: str) -> grpc.Status:
    code = grpc.StatusCode[code_name]
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=f"TEST_{code_name}", domain="gatewaytest"))
    return rpc_status.to_status(status)


def _echo_handlers(pool: descriptor_pool.DescriptorPool) -> tuple[grpc.GenericRpcHandler, ...]:
    request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("gatewaytest.v1.EchoRequest"))
    codec = {"request_deserializer": request_class.FromString, "response_serializer": request_class.SerializeToString}

    async def echo(request, context):
        for key, value in context.invocation_metadata():
            if isinstance(value, str) and not key.startswith((":", "grpc-")):
                request.labels[key] = value
        return request

    async def wait(request, context):
        await asyncio.sleep(request.size / 1000)
        return request

    async def fail(request, context):
        await context.abort_with_status(_failure(request.id, f"failing with {request.id} as asked"))

    async def count(request, context):
        for number in range(request.size):
            yield request_class(id=str(number))
        if request.id:
            await context.abort_with_status(_failure(request.id, "the stream failed as asked"))

    # Methods the gateway must not route still answer, so a test that reaches them fails visibly.
    echoing = {
        name: grpc.unary_unary_rpc_method_handler(echo, **codec)
        for name in ("Echo", "Unannotated", "ServiceOnly", "AdminOrService", "UnannotatedServiceOnly")
    }
    return (
        grpc.method_handlers_generic_handler(
            ECHO_SERVICE,
            {
                **echoing,
                "Fail": grpc.unary_unary_rpc_method_handler(fail, **codec),
                "Count": grpc.unary_stream_rpc_method_handler(count, **codec),
                "Wait": grpc.unary_unary_rpc_method_handler(wait, **codec),
            },
        ),
        grpc.method_handlers_generic_handler(
            INTERNAL_SERVICE,
            {
                "Ping": grpc.unary_unary_rpc_method_handler(echo, **codec),
                "Unannotated": grpc.unary_unary_rpc_method_handler(echo, **codec),
            },
        ),
    )


@pytest.fixture(scope="session")
def echo_descriptor_set():
    with tempfile.TemporaryDirectory() as directory:
        yield compile_proto(ECHO_PROTO, pathlib.Path(directory))


@pytest.fixture(scope="session")
async def echo_server(echo_descriptor_set):
    """Address of a gRPC server with the echo service, health and reflection (v1alpha only)."""
    pool = pool_of(echo_descriptor_set)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(_echo_handlers(pool))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ECHO_SERVICE, INTERNAL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server, pool
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture(scope="session")
async def start_gateway():
    """start_gateway(backends, **config) -> base URL of a new in-process gateway on a free port."""
    runners: list[web.AppRunner] = []

    async def start(backends: dict[str, str], **config) -> str:
        settings = GatewayConfig(host="127.0.0.1", port=0, backends=backends, rediscover_seconds=0, **config)
        runner = web.AppRunner(build_app(settings), access_log=None, handler_cancellation=True)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, settings.host, 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture(scope="session")
async def gateway_url(start_gateway, auth_server):
    """A gateway in front of the in-process auth service."""
    return await start_gateway({"auth": auth_server})


@pytest.fixture(scope="session")
async def echo_gateway_url(start_gateway, echo_server, echo_descriptor_set):
    """A gateway in front of the echo backend, with CORS for one origin, a small body limit, and the unannotated
    methods of the echo and health services routed."""
    return await start_gateway(
        {"echo": echo_server},
        cors_origins=("https://app.example",),
        max_body_bytes=64 * 1024,
        descriptor_set=str(echo_descriptor_set),
        unbound_services=(ECHO_SERVICE, health.SERVICE_NAME),
    )


@pytest.fixture(scope="session")
async def http():
    async with aiohttp.ClientSession() as session:
        yield session
