"""Helpers for tests: settings for in-process servers, rich status parsing."""

import contextlib
import dataclasses
import uuid

import grpc
import psycopg
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.engine import make_url

from kernel import migrations
from kernel.settings import LOOPBACK_NETWORKS, Settings

# In-process servers learn revocations every second, so the tests of that bound stay short.
REVOCATION_POLL_SECONDS = 1.0
# Every test signs in from 127.0.0.1 into one database, so servers and suites started by the tests get a
# per-client sign-in limit no run reaches; the limit itself is tested on servers of its own
# (tests/test_auth_hardening.py).
TEST_CLIENT_LIMIT = 100_000
# The tests' webhook receivers listen on loopback, which production refuses unless allowed.
LOOPBACK = LOOPBACK_NETWORKS


@contextlib.contextmanager
def fresh_database(server_url: str, services: tuple[str, ...]):
    """A new database on the test server with these services' schemas migrated to head; dropped afterwards."""
    name = f"coupons_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    for service in services:
        if migrations.script_dir(service).exists():
            migrations.upgrade(service, url)
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def settings_for(component: str, database_url: str, **overrides) -> Settings:
    base = Settings.from_env(component)
    defaults = {
        "host": "127.0.0.1",
        "port": 0,
        "db_pool_size": 20,
        "db_max_overflow": 20,
        "revocation_poll_seconds": REVOCATION_POLL_SECONDS,
        "login_max_failures_per_client": TEST_CLIENT_LIMIT,
        "workers": 1,  # one process per service unless a test says otherwise (tests/test_workers.py)
        "webhook_allowed_networks": LOOPBACK,
    }
    return dataclasses.replace(base, database_url=database_url, **{**defaults, **overrides})


@contextlib.asynccontextmanager
async def serving(build, component: str, database_url: str, auth_addr: str, **overrides):
    """A component built and started on a free loopback port, wired to the test auth server (its keys,
    revocations and service tokens) as in production; yields its address and stops it afterwards."""
    settings = settings_for(component, database_url, auth_addr=auth_addr, **overrides)
    server, cleanup = await build(settings)
    port = await server.start("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(1)
        await cleanup()


def bearer(session) -> tuple[tuple[str, str]]:
    """Call metadata carrying a session's access token."""
    return (("authorization", f"Bearer {session.access_token}"),)


@dataclasses.dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict
    field_violations: dict[str, str]
    details: list

    def detail(self, kind):
        for packed in self.details:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                return message
        return None


def rich_error(error: grpc.RpcError) -> RichError:
    """Unpacks the google.rpc.Status a service put in the trailers."""
    status: status_pb2.Status | None = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    if status is None:
        for key, value in error.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
    reason, metadata, violations = "", {}, {}
    for packed in status.details if status else []:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            violations.update({v.field: v.description for v in bad.field_violations})
    return RichError(
        error.code(), error.details(), reason, metadata, violations, list(status.details) if status else []
    )


async def expect_error(call, code: grpc.StatusCode, reason: str | None = None) -> RichError:
    """Awaits a call that must fail with this code (and reason); returns the unpacked error."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        rich = rich_error(error)
        assert rich.code == code, f"expected {code.name}, got {rich.code.name}: {rich.message}"
        if reason is not None:
            assert rich.reason == reason, f"expected reason {reason}, got {rich.reason}: {rich.message}"
        return rich
    raise AssertionError(f"the call succeeded; expected {code.name}")
