"""Fixtures for the fuzz tests: the budgets, an auth server of cheap bcrypt cost, and signed-in callers.

The fuzz targets are the real servers on loopback (tests/conftest.py and the fixtures_* modules). Only the
auth server the fuzzers talk to is one of their own, on the same database and signing key, with bcrypt at
its lowest cost: Register, Login, CreateUser and ChangePassword would otherwise spend the budget hashing
(0.25 s per hash at cost 12), and the cost changes nothing a fuzzer can see but time.

FUZZ_SCALE (an integer, default 1) multiplies every example count, e.g. `FUZZ_SCALE=20 make test
PYTEST_ARGS='-k fuzz'` for a longer run.
"""

import os
import uuid
from dataclasses import dataclass

import grpc
import pytest

from kernel.context import ADMIN, SERVICE, USER
from kernel.tokens import TokenIssuer
from tests.support import settings_for

FUZZ_SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
FUZZ_BCRYPT_ROUNDS = 4  # bcrypt's minimum


@dataclass(frozen=True)
class FuzzCaller:
    kind: str  # ADMIN, USER or SERVICE
    user_id: str
    token: str

    @property
    def metadata(self) -> tuple:
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
async def fuzz_auth_server(database_url, signing_key):
    """The auth service as the fuzzers meet it: the real one, with bcrypt at its minimum cost."""
    from services.auth.app import build

    server, cleanup = await build(settings_for("auth", database_url, bcrypt_rounds=FUZZ_BCRYPT_ROUNDS), signing_key)
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(1)
    await cleanup()


@pytest.fixture(scope="session")
async def fuzz_callers(fuzz_auth_server, database_url, signing_key) -> dict[str, FuzzCaller]:
    """An ADMIN and a USER of their own, signed in through Login, and a SERVICE token (service:books).

    They are the fuzzers' alone: a fuzzed ChangePassword or UpdateUser can only reach these accounts."""
    from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
    from services.auth.demo import ensure_users

    settings = settings_for("auth", database_url, bcrypt_rounds=FUZZ_BCRYPT_ROUNDS)
    password = "fuzz-pass-123"
    emails = {kind: f"fuzz-{kind.lower()}-{uuid.uuid4().hex[:8]}@example.com" for kind in (ADMIN, USER)}
    await ensure_users(settings, [(email, password, f"Fuzz {kind}", kind) for kind, email in emails.items()])
    callers = {}
    async with grpc.aio.insecure_channel(fuzz_auth_server) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for kind, email in emails.items():
            session = await stub.Login(auth_pb2.LoginRequest(email=email, password=password))
            callers[kind] = FuzzCaller(kind, session.user.id, session.access_token)
    issuer = TokenIssuer(signing_key, settings.jwt_issuer, settings.jwt_audience, ttl_seconds=3600)
    callers[SERVICE] = FuzzCaller(SERVICE, "service:books", issuer.issue("service:books", SERVICE))
    return callers


@dataclass(frozen=True)
class FuzzWorld:
    """Real things for fuzzed requests to name, so they reach past "not found" into the domain rules."""

    book_id: str
    codes: tuple[str, ...]  # codes[0] is held by the fuzz USER
    pool_id: str
    target_user_id: str  # an account only the fuzzers change (the callers' own are never named by id)
    target_email: str


# A code space of 2^4 = 16 codes, of which at most a quarter may ever exist: a fuzzed GenerateCodes on the
# world's book stays tiny, and the shape cannot change once the book has codes.
FUZZ_BOOK_ALPHABET, FUZZ_BOOK_LENGTH, FUZZ_BOOK_CODES = "AB", 4, 2


@pytest.fixture(scope="module")
async def fuzz_world(fuzz_callers, fuzz_auth_server, books_server, redemption_server, pools_server) -> FuzzWorld:
    """A world per fuzz module: one module's fuzzing may archive the book or delete the pool of its own."""
    from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
    from coupons.books.v1 import books_pb2, books_pb2_grpc
    from coupons.pools.v1 import pools_pb2, pools_pb2_grpc
    from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc

    admin, user = fuzz_callers[ADMIN].metadata, fuzz_callers[USER]
    tag = uuid.uuid4().hex[:8].upper()
    async with (
        grpc.aio.insecure_channel(fuzz_auth_server) as auth,
        grpc.aio.insecure_channel(books_server) as books,
        grpc.aio.insecure_channel(redemption_server) as redemption,
        grpc.aio.insecure_channel(pools_server) as pools,
    ):
        email = f"fuzz-target-{tag.lower()}@example.com"
        target = await auth_pb2_grpc.AuthServiceStub(auth).CreateUser(
            auth_pb2.CreateUserRequest(email=email, password="fuzz-pass-123", name="Fuzz Target"), metadata=admin
        )
        book_stub = books_pb2_grpc.BookServiceStub(books)
        book = await book_stub.CreateBook(
            books_pb2.CreateBookRequest(
                book=books_pb2.Book(
                    name=f"Fuzz {tag}",
                    code_pattern=f"FZ{tag}-{{}}",
                    code_length=FUZZ_BOOK_LENGTH,
                    code_alphabet=FUZZ_BOOK_ALPHABET,
                    allow_multi_redemption=True,
                    max_redemptions_per_user=3,
                    allow_self_claim=True,
                )
            ),
            metadata=admin,
        )
        async for _ in book_stub.GenerateCodes(
            books_pb2.GenerateCodesRequest(book_id=book.id, count=FUZZ_BOOK_CODES), metadata=admin
        ):
            pass
        listed = await redemption_pb2_grpc.RedemptionServiceStub(redemption).ListBookCoupons(
            redemption_pb2.ListBookCouponsRequest(book_id=book.id), metadata=admin
        )
        codes = tuple(c.code for c in listed.coupons)
        await redemption_pb2_grpc.RedemptionServiceStub(redemption).AssignCoupon(
            redemption_pb2.AssignCouponRequest(code=codes[0], user_id=user.user_id), metadata=admin
        )
        pool_stub = pools_pb2_grpc.PoolServiceStub(pools)
        pool = await pool_stub.CreatePool(
            pools_pb2.CreatePoolRequest(pool=pools_pb2.Pool(name=f"Fuzz {tag}")), metadata=admin
        )
        await pool_stub.AddPoolMembers(
            pools_pb2.AddPoolMembersRequest(pool_id=pool.id, user_ids=[user.user_id, target.id]), metadata=admin
        )
    return FuzzWorld(book.id, codes, pool.id, target.id, email)
