"""Fixtures: one real PostgreSQL per test session, migrated, and real gRPC servers on loopback.

The database is DATABASE_URL when set (a fresh database is created on that server), else a
testcontainers PostgreSQL when a Docker engine answers, else the embedded PostgreSQL wheel.
"""

import contextlib
import os
import uuid

import grpc
import pytest

from kernel import migrations
from kernel.localdb import temporary_postgres
from kernel.tokens import SigningKey
from tests.support import fresh_database

# Each service's fixtures live in its own module, so work on one service does not touch another's.
pytest_plugins = [
    "tests.fixtures_redemption",
    "tests.fixtures_books",
    "tests.fixtures_pools",
    "tests.fixtures_gateway",
    "tests.fixtures_suite",
    "tests.fixtures_fuzz",
    "tests.fixtures_console",
]


@contextlib.contextmanager
def _server_url():
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    try:
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
    except Exception:  # no Docker engine answers: DockerException already at construction
        container = None
    if container is not None:
        with container:
            yield container.get_connection_url()
        return
    with temporary_postgres() as server:
        yield server.url


@pytest.fixture(scope="session")
def database_server_url():
    with _server_url() as server_url:
        yield server_url


@pytest.fixture(scope="session")
def database_url(database_server_url):
    """A fresh database on the chosen server, with every service's schema migrated to head."""
    with fresh_database(database_server_url, migrations.SERVICES) as url:
        yield url


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
async def auth_server(database_url, signing_key):
    from services.auth.app import build
    from tests.support import settings_for

    server, cleanup = await build(settings_for("auth", database_url), signing_key)
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(1)
    await cleanup()


@pytest.fixture(scope="session")
async def auth_channel(auth_server):
    channel = grpc.aio.insecure_channel(auth_server)
    yield channel
    await channel.close()


@pytest.fixture(scope="session")
async def auth_stub(auth_channel):
    from coupons.auth.v1 import auth_pb2_grpc

    return auth_pb2_grpc.AuthServiceStub(auth_channel)


@pytest.fixture(scope="session")
async def auth_internal_stub(auth_channel):
    from coupons.auth.v1 import auth_pb2_grpc

    return auth_pb2_grpc.AuthInternalServiceStub(auth_channel)


@pytest.fixture(scope="session")
def service_metadata(signing_key) -> tuple:
    """Call metadata of a service of the suite (pools), signed in as itself."""
    from kernel.context import SERVICE
    from kernel.tokens import TokenIssuer
    from tests.support import settings_for

    settings = settings_for("auth", "")
    issuer = TokenIssuer(signing_key, settings.jwt_issuer, settings.jwt_audience, ttl_seconds=3600)
    return (("authorization", f"Bearer {issuer.issue('service:pools', SERVICE)}"),)


@pytest.fixture(scope="session")
async def admin_session(auth_stub, database_url):
    """An ADMIN account, made the way `make run` makes the demo admin, and signed in."""
    from coupons.auth.v1 import auth_pb2
    from services.auth.demo import ensure_user
    from tests.support import settings_for

    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await ensure_user(settings_for("auth", database_url), email, "admin-pass-123", "Test Admin", "ADMIN")
    return await auth_stub.Login(auth_pb2.LoginRequest(email=email, password="admin-pass-123"))
