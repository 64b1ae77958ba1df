"""Fixtures for the redemption tests: the service in-process on loopback, callers, books and the database."""

import itertools
import uuid
from dataclasses import dataclass

import grpc
import psycopg
import pytest

from coupons.redemption.v1 import redemption_pb2 as pb
from coupons.redemption.v1 import redemption_pb2_grpc
from kernel.context import SERVICE, USER
from kernel.tokens import TokenIssuer
from tests.support import bearer, serving, settings_for

CHANNELS = 4


@dataclass(frozen=True)
class Caller:
    user_id: str
    metadata: tuple


class Ledger:
    """Test helpers over the redemption service: callers with tokens, books with codes, parallel stubs."""

    def __init__(self, stubs: list, internal, issuer: TokenIssuer, admin: Caller, accounts: psycopg.Connection):
        self.stubs = stubs
        self.stub = stubs[0]
        self.internal = internal  # LedgerInternalService, called as the books service
        self.issuer = issuer
        self.admin = admin
        self.service = (("authorization", f"Bearer {issuer.issue('service:books', SERVICE)}"),)
        self._accounts = accounts
        self._round_robin = itertools.cycle(stubs)

    def next_stub(self):
        """Stubs over different channels in turn, so parallel calls really travel in parallel."""
        return next(self._round_robin)

    def caller(self, role: str = USER, active: bool = True) -> Caller:
        """A fresh account in auth's schema (written directly: registering through bcrypt would take 0.25 s
        each) and a token minted with the auth service's signing key."""
        user_id = str(uuid.uuid4())
        self._accounts.execute(
            "INSERT INTO auth.users (id, email, name, role, active, password_hash) VALUES (%s, %s, '', %s, %s, '')",
            (user_id, f"ledger-{user_id}@example.com", role, active),
        )
        return Caller(user_id, (("authorization", f"Bearer {self.issuer.issue(user_id, role)}"),))

    def stranger(self) -> Caller:
        """A token for an account that does not exist."""
        user_id = str(uuid.uuid4())
        return Caller(user_id, (("authorization", f"Bearer {self.issuer.issue(user_id, USER)}"),))

    async def book(self, codes: int = 0, **rules) -> tuple[str, list[str]]:
        """A book with these rules (PutBookRules) and `codes` fresh codes (AddCodes)."""
        book_id = str(uuid.uuid4())
        await self.internal.PutBookRules(
            pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=1, **rules)), metadata=self.service
        )
        # Codes sort in insertion order, so a bias towards either shows in the same place.
        prefix = uuid.uuid4().hex[:12].upper()
        new_codes = [f"T-{prefix}-{index:07d}" for index in range(codes)]
        if new_codes:
            await self.internal.AddCodes(pb.AddCodesRequest(book_id=book_id, codes=new_codes), metadata=self.service)
        return book_id, new_codes

    async def assign(self, code: str, user: Caller) -> pb.Coupon:
        return await self.stub.AssignCoupon(
            pb.AssignCouponRequest(code=code, user_id=user.user_id), metadata=self.admin.metadata
        )

    async def held_coupon(self, **rules) -> tuple[str, str, Caller]:
        """(book_id, code, holder): a one-code book whose code is assigned to a fresh user."""
        book_id, (code,) = await self.book(1, **rules)
        holder = self.caller()
        await self.assign(code, holder)
        return book_id, code, holder


@pytest.fixture(scope="session")
async def redemption_server(database_url, auth_server):
    from services.redemption.app import build

    async with serving(build, "redemption", database_url, auth_server) as address:
        yield address


@pytest.fixture(scope="session")
async def redemption_stubs(redemption_server):
    channels = [
        grpc.aio.insecure_channel(redemption_server, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    yield (
        [redemption_pb2_grpc.RedemptionServiceStub(channel) for channel in channels],
        redemption_pb2_grpc.LedgerInternalServiceStub(channels[0]),
    )
    for channel in channels:
        await channel.close()


@pytest.fixture(scope="session")
async def redemption_stub(redemption_stubs):
    return redemption_stubs[0][0]


@pytest.fixture(scope="session")
async def ledger(redemption_stubs, signing_key, admin_session, database_url):
    settings = settings_for("redemption", "")
    issuer = TokenIssuer(signing_key, settings.jwt_issuer, settings.jwt_audience, ttl_seconds=3600)
    public, internal = redemption_stubs
    with psycopg.connect(database_url, autocommit=True) as accounts:
        yield Ledger(public, internal, issuer, Caller(admin_session.user.id, bearer(admin_session)), accounts)


@pytest.fixture
async def ledger_db(database_url):
    """A direct connection to the database, to check the ledger against what the service reports."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn
