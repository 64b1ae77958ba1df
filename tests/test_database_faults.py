"""Database faults: PostgreSQL restarted (fast and immediate) under parallel redeems, and readiness while
it is down. The redemption service runs on a PostgreSQL of its own, so the restarts touch nothing else."""

import asyncio
import collections
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coupons.redemption.v1 import redemption_pb2 as pb
from coupons.redemption.v1 import redemption_pb2_grpc
from kernel import migrations
from kernel.localdb import temporary_postgres
from kernel.server import LIVENESS, READINESS_INTERVAL_SECONDS
from tests.support import serving

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
WORKERS, CODES_EACH = 8, 250  # more than the workers get through; they stop after the restarts


@pytest.fixture
async def own_ledger(auth_server):
    from services.redemption.app import build

    with temporary_postgres() as postgres:
        migrations.upgrade("redemption", postgres.url)
        async with serving(build, "redemption", postgres.url, auth_server) as address:
            async with grpc.aio.insecure_channel(address) as channel:
                yield postgres, channel


async def _codes_for(channel, ledger, users) -> dict[str, list[str]]:
    internal = redemption_pb2_grpc.LedgerInternalServiceStub(channel)
    book_id = "5f0c6a59-6a6a-4c2e-9d1e-" + f"{int(time.time() * 1000) % 10**12:012d}"
    await internal.PutBookRules(
        pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=1)), metadata=ledger.service
    )
    codes = [f"FAULT-{book_id[-8:]}-{i:05d}" for i in range(len(users) * CODES_EACH)]
    await internal.AddCodes(pb.AddCodesRequest(book_id=book_id, codes=codes), metadata=ledger.service)
    reply = await internal.BulkAssign(
        pb.BulkAssignRequest(
            book_id=book_id, assignments=[pb.UserCodeCount(user_id=u.user_id, count=CODES_EACH) for u in users]
        ),
        metadata=ledger.service,
    )
    return {a.user_id: list(a.codes) for a in reply.assignments}


async def test_a_restarted_database_costs_only_retries_and_loses_or_doubles_nothing(own_ledger, ledger):
    postgres, channel = own_ledger
    stub = redemption_pb2_grpc.RedemptionServiceStub(channel)
    users = [ledger.caller() for _ in range(WORKERS)]
    held = await _codes_for(channel, ledger, users)
    seen: collections.Counter = collections.Counter()
    acknowledged: list[tuple[float, str]] = []

    restarted = asyncio.Event()

    async def redeem_all(user):
        acknowledged_after = 0
        for code in held[user.user_id]:
            if restarted.is_set() and acknowledged_after >= 3:
                return
            request = pb.RedeemCouponRequest(code=code, request_id=f"redeem-{code}")
            while True:  # a client that follows gRPC conventions: retry UNAVAILABLE/ABORTED, same request_id
                try:
                    await stub.RedeemCoupon(request, metadata=user.metadata, timeout=10)
                    seen["OK"] += 1
                    acknowledged.append((time.monotonic(), code))
                    acknowledged_after += restarted.is_set()
                    break
                except grpc.aio.AioRpcError as error:
                    seen[error.code().name] += 1
                    assert error.code() in RETRYABLE, f"{error.code().name}: {error.details()}"
                    await asyncio.sleep(0.05)

    async def restarts():
        back = []
        for mode in ("fast", "immediate"):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(postgres.restart, mode)
            back.append(time.monotonic())
        restarted.set()
        return back

    *_, back = await asyncio.gather(*(redeem_all(u) for u in users), restarts())
    assert set(seen) <= {"OK", "UNAVAILABLE", "ABORTED"}, seen
    assert seen["UNAVAILABLE"] > 0, "the restarts happened after the load ended; nothing was tested"
    for up in back:  # service recovered: an acknowledged redemption soon after each restart
        assert min(t for t, _ in acknowledged if t >= up) - up < 5.0
    import psycopg

    with psycopg.connect(postgres.url) as conn:
        redeemed = dict(
            conn.execute("SELECT code, redemption_count FROM redemption.coupons WHERE state = 'REDEEMED'").fetchall()
        )
        events = dict(
            conn.execute(
                "SELECT code, count(*) FROM redemption.history WHERE event = 'REDEEMED_EVENT' GROUP BY code"
            ).fetchall()
        )
    assert sorted(redeemed) == sorted(code for _, code in acknowledged)  # every acknowledged one, nothing else
    assert set(redeemed.values()) == {1} and set(events.values()) == {1}  # none doubled


async def test_readiness_follows_the_database_and_liveness_does_not(own_ledger, ledger):
    postgres, channel = own_ledger
    health = health_pb2_grpc.HealthStub(channel)

    async def status(name: str = "") -> int:
        return (await health.Check(health_pb2.HealthCheckRequest(service=name))).status

    async def becomes(wanted: int) -> float:
        started = time.monotonic()
        while await status() != wanted:
            assert time.monotonic() - started < READINESS_INTERVAL_SECONDS + 5, "readiness did not follow"
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    assert await status() == health_pb2.HealthCheckResponse.SERVING
    await asyncio.to_thread(postgres.stop, "immediate")
    await becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await status(LIVENESS) == health_pb2.HealthCheckResponse.SERVING
    stub = redemption_pb2_grpc.RedemptionServiceStub(channel)
    caller = ledger.caller()
    try:
        await stub.GetCoupon(pb.GetCouponRequest(code="ANY-CODE"), metadata=caller.metadata)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    await asyncio.to_thread(postgres.start)
    await becomes(health_pb2.HealthCheckResponse.SERVING)
    try:  # answered again, by the ledger's own rules
        await stub.GetCoupon(pb.GetCouponRequest(code="ANY-CODE"), metadata=caller.metadata)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
