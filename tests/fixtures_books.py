"""Fixtures for the books tests: the books server in process, wired to the real redemption server."""

import uuid

import grpc
import pytest

from kernel.tokens import TokenVerifier


async def start_server(build, component: str, database_url: str, signing_key, **overrides):
    """Builds and starts a component on a free loopback port; returns (address, stop)."""
    from tests.support import settings_for

    settings = settings_for(component, database_url, **overrides)
    verifier = TokenVerifier.with_keys([signing_key.public_key], settings.jwt_issuer, settings.jwt_audience)
    server, cleanup = await build(settings, verifier)
    port = await server.start("127.0.0.1:0")

    async def stop() -> None:
        await server.stop(1)
        await cleanup()

    return f"127.0.0.1:{port}", stop


@pytest.fixture(scope="session")
async def books_server(database_url, signing_key, redemption_server):
    """Books wired to the redemption tests' server (tests/fixtures_redemption.py), so both share one ledger."""
    from services.books.app import build

    address, stop = await start_server(build, "books", database_url, signing_key, redemption_addr=redemption_server)
    yield address
    await stop()


@pytest.fixture(scope="session")
async def books_stub(books_server):
    from coupons.books.v1 import books_pb2_grpc

    channel = grpc.aio.insecure_channel(books_server)
    yield books_pb2_grpc.BookServiceStub(channel)
    await channel.close()


@pytest.fixture(scope="session")
async def books_user_session(auth_stub):
    """A signed-in USER account."""
    from coupons.auth.v1 import auth_pb2

    return await auth_stub.Register(auth_pb2.RegisterRequest(
        email=f"books-user-{uuid.uuid4().hex[:8]}@example.com", password="user-pass-123", name="Books User"))
