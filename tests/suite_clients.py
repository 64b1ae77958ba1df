"""Test clients of a process suite (suite.launch): stubs over the round-robin target of each service's
replicas (what every client of the suite gets), tokens minted with the suite's own signing key, callers
written straight into auth's table (no bcrypt), refusals as 'CODE/REASON', and each replica's metrics."""

import asyncio
import collections
import re
import time
import urllib.request
import uuid
from dataclasses import dataclass

import grpc
import psycopg

from coupons.auth.v1 import auth_pb2_grpc
from coupons.books.v1 import books_pb2, books_pb2_grpc
from coupons.pools.v1 import pools_pb2, pools_pb2_grpc
from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from kernel.context import ADMIN, USER
from kernel.grpc_clients import channel
from kernel.settings import Settings
from kernel.tokens import SigningKey, TokenIssuer
from suite.processes import Component, Suite
from tests.support import rich_error

_METRIC = re.compile(r"^coupons_rpcs_total\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def rpc_counts(component: Component) -> collections.Counter:
    """Calls one process has handled so far, by method (every status code), from its /metrics."""
    url = f"http://127.0.0.1:{component.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    counts: collections.Counter = collections.Counter()
    for labels, value in _METRIC.findall(text):
        counts[dict(_LABEL.findall(labels))["method"]] += int(float(value))
    return counts


class CallsPerReplica:
    """How many calls of some methods each replica of a service handled inside a `with` block."""

    def __init__(self, suite: Suite, service: str, *methods: str):
        self.replicas = suite.replicas_of(service)
        self.methods = methods
        self.before = [rpc_counts(c) for c in self.replicas]
        self.calls: dict[str, list[int]] = {}

    def __enter__(self) -> "CallsPerReplica":
        return self

    def __exit__(self, *exc) -> None:
        self._read()

    def _read(self) -> None:
        after = [rpc_counts(c) for c in self.replicas]
        self.calls = {m: [a[m] - b[m] for a, b in zip(after, self.before, strict=True)] for m in self.methods}

    async def served(self, method: str, total: int | None = None, timeout: float = 3.0) -> list[int]:
        """Calls per replica; with a total, read again until they add up to it: a refusal reaches the caller
        before the server counts it (grpc aio sends the status at abort, the interceptor counts afterwards)."""
        deadline = time.monotonic() + timeout
        while total is not None and sum(self.calls[method]) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            self._read()
        return self.calls[method]

    def __str__(self) -> str:
        return ", ".join(f"{m} {'/'.join(map(str, calls))}" for m, calls in self.calls.items())


@dataclass(frozen=True)
class Caller:
    user_id: str
    metadata: tuple


async def outcome(call) -> str:
    """'OK', or the refusal as 'CODE/REASON'."""
    try:
        await call
        return "OK"
    except grpc.aio.AioRpcError as error:
        rich = rich_error(error)
        return f"{rich.code.name}/{rich.reason}"


async def settled(make_call, retry=("ABORTED",)) -> tuple[str, int]:
    """Calls again while the answer says retry (ABORTED by default); returns the last outcome and the calls."""
    calls = 0
    while True:
        calls += 1
        result = await outcome(make_call())
        if not result.startswith(retry):
            return result, calls
        await asyncio.sleep(0.005)


class SuiteClient:
    SERVICES = ("auth", "books", "redemption", "pools")

    def __init__(self, suite: Suite, database_url: str):
        self.suite = suite
        self.channels = {name: channel(suite.target(name)) for name in self.SERVICES}
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channels["auth"])
        self.books = books_pb2_grpc.BookServiceStub(self.channels["books"])
        self.redemption = redemption_pb2_grpc.RedemptionServiceStub(self.channels["redemption"])
        self.pools = pools_pb2_grpc.PoolServiceStub(self.channels["pools"])
        settings = Settings.from_env("auth")
        key = SigningKey.from_pem((suite.run_dir / "keys" / "jwt-ed25519.pem").read_bytes())
        self.issuer = TokenIssuer(key, settings.jwt_issuer, settings.jwt_audience, ttl_seconds=3600)
        self.db = psycopg.connect(database_url, autocommit=True)  # straight to PostgreSQL, never a pooler
        self.admin = self.caller(ADMIN)

    def caller(self, role: str = USER) -> Caller:
        """A fresh active account in auth's table and a token for it signed by the suite's auth key."""
        user_id = str(uuid.uuid4())
        self.db.execute(
            "INSERT INTO auth.users (id, email, name, role, active, password_hash) VALUES (%s, %s, '', %s, true, '')",
            (user_id, f"suite-{user_id}@example.com", role),
        )
        return Caller(user_id, (("authorization", f"Bearer {self.issuer.issue(user_id, role)}"),))

    async def book(self, codes: int, **rules) -> tuple[str, list[str]]:
        """A book made through the books service (which pushes its rules to the ledger) and `codes` codes."""
        book = await self.books.CreateBook(
            books_pb2.CreateBookRequest(
                book=books_pb2.Book(name=f"Suite {uuid.uuid4().hex[:10]}", code_pattern="S-{}", code_length=8, **rules)
            ),
            metadata=self.admin.metadata,
        )
        prefix = uuid.uuid4().hex[:10].upper()
        new_codes = [f"S-{prefix}-{index:05d}" for index in range(codes)]
        if new_codes:
            imported = await self.books.ImportCodes(
                books_pb2.ImportCodesRequest(book_id=book.id, codes=new_codes), metadata=self.admin.metadata
            )
            assert imported.accepted == codes, imported
        return book.id, new_codes

    async def assign(self, code: str, user: Caller) -> redemption_pb2.Coupon:
        return await self.redemption.AssignCoupon(
            redemption_pb2.AssignCouponRequest(code=code, user_id=user.user_id), metadata=self.admin.metadata
        )

    async def stats(self, book_id: str) -> books_pb2.BookStats:
        return await self.books.GetBookStats(books_pb2.GetBookStatsRequest(id=book_id), metadata=self.admin.metadata)

    async def pool(self, members: list[Caller]) -> pools_pb2.Pool:
        pool = await self.pools.CreatePool(
            pools_pb2.CreatePoolRequest(pool=pools_pb2.Pool(name=f"Suite pool {uuid.uuid4().hex[:10]}")),
            metadata=self.admin.metadata,
        )
        await self.pools.AddPoolMembers(
            pools_pb2.AddPoolMembersRequest(pool_id=pool.id, user_ids=[m.user_id for m in members]),
            metadata=self.admin.metadata,
        )
        return pool

    def one(self, query: str, *args):
        return self.db.execute(query, args).fetchone()

    def events(self, book_id: str, event: str) -> tuple[int, int]:
        """(events, distinct codes) of one kind in the book's history."""
        return self.one(
            "SELECT count(*), count(DISTINCT code) FROM redemption.history WHERE book_id = %s AND event = %s",
            book_id,
            event,
        )

    def ledger_matches_history(self, book_id: str) -> None:
        """The ledger's rows agree with its append-only history and its (user, book) counters."""
        redeemed_events, assigned_events, distinct_assigned = self.one(
            "SELECT count(*) FILTER (WHERE event = 'REDEEMED_EVENT'), count(*) FILTER (WHERE event = 'ASSIGNED_EVENT'),"
            " count(DISTINCT code) FILTER (WHERE event = 'ASSIGNED_EVENT') FROM redemption.history WHERE book_id = %s",
            book_id,
        )
        redemptions, held = self.one(
            "SELECT coalesce(sum(redemption_count), 0), count(*) FILTER (WHERE user_id IS NOT NULL) "
            "FROM redemption.coupons WHERE book_id = %s",
            book_id,
        )
        assert assigned_events == distinct_assigned == held, (assigned_events, distinct_assigned, held)
        assert redeemed_events == redemptions, (redeemed_events, redemptions)
        mismatched = self.db.execute(
            "SELECT h.user_id FROM redemption.holdings h LEFT JOIN redemption.coupons c "
            "ON c.book_id = h.book_id AND c.user_id = h.user_id WHERE h.book_id = %s "
            "GROUP BY h.user_id, h.held HAVING h.held <> count(c.code)",
            (book_id,),
        ).fetchall()
        assert mismatched == []

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()
        self.db.close()
