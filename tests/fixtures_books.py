"""Fixtures for the books tests: the books server in process, wired to the real redemption server."""

import uuid

import grpc
import pytest

from tests.support import serving


@pytest.fixture(scope="session")
async def books_server(database_url, auth_server, redemption_server):
    """Books wired to the redemption tests' server (tests/fixtures_redemption.py), so both share one ledger."""
    from services.books.app import build

    async with serving(build, "books", database_url, auth_server, redemption_addr=redemption_server) as address:
        yield address


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

    return await auth_stub.Register(
        auth_pb2.RegisterRequest(
            email=f"books-user-{uuid.uuid4().hex[:8]}@example.com", password="user-pass-123", name="Books User"
        )
    )
