"""Fixtures for the pools tests: the pools server in process, wired to the real auth and redemption servers."""

import asyncio
import uuid

import grpc
import pytest

from tests.support import bearer, serving

POOL_USERS = 8


@pytest.fixture(scope="session")
async def pools_server(database_url, auth_server, redemption_server):
    from services.pools.app import build

    async with serving(build, "pools", database_url, auth_server, redemption_addr=redemption_server) as address:
        yield address


@pytest.fixture(scope="session")
async def pools_stub(pools_server):
    from coupons.pools.v1 import pools_pb2_grpc

    channel = grpc.aio.insecure_channel(pools_server)
    yield pools_pb2_grpc.PoolServiceStub(channel)
    await channel.close()


@pytest.fixture(scope="session")
def admin(admin_session) -> tuple:
    """Call metadata of the signed-in ADMIN."""
    return bearer(admin_session)


@pytest.fixture(scope="session")
async def pool_users(auth_stub) -> list:
    """Registered USER accounts (sessions) to put in pools; each test uses its own book, so they are shared."""
    from coupons.auth.v1 import auth_pb2

    return list(
        await asyncio.gather(
            *(
                auth_stub.Register(
                    auth_pb2.RegisterRequest(
                        email=f"pool-user-{uuid.uuid4().hex[:10]}@example.com",
                        password="pool-pass-123",
                        name="Pool User",
                    )
                )
                for _ in range(POOL_USERS)
            )
        )
    )


@pytest.fixture
async def new_pool(pools_stub, admin):
    """Makes a pool with a unique name and these members (user ids)."""
    from coupons.pools.v1 import pools_pb2

    async def make(user_ids=()):
        pool = await pools_stub.CreatePool(
            pools_pb2.CreatePoolRequest(pool=pools_pb2.Pool(name=f"Pool {uuid.uuid4().hex[:10]}")), metadata=admin
        )
        if user_ids:
            await pools_stub.AddPoolMembers(
                pools_pb2.AddPoolMembersRequest(pool_id=pool.id, user_ids=list(user_ids)), metadata=admin
            )
        return pool

    return make
