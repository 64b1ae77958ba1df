"""Real parallel callers (asyncio.gather over several channels) against the ledger's locks and limits."""

import asyncio
import collections

import grpc

from coupons.redemption.v1 import redemption_pb2 as pb
from tests.support import rich_error


async def outcome(call) -> str:
    """'OK', or the refusal as 'CODE/REASON'."""
    try:
        await call
        return "OK"
    except grpc.aio.AioRpcError as error:
        rich = rich_error(error)
        return f"{rich.code.name}/{rich.reason}"


async def settled(make_call) -> str:
    """Retries ABORTED (as the error asks) until the call succeeds or is refused for good."""
    while True:
        result = await outcome(make_call())
        if not result.startswith("ABORTED"):
            return result
        await asyncio.sleep(0.005)


async def test_64_parallel_redeems_of_a_single_use_code(ledger, ledger_db):
    _, code, holder = await ledger.held_coupon()
    results = await asyncio.gather(
        *(
            outcome(ledger.next_stub().RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata))
            for _ in range(64)
        )
    )
    tally = collections.Counter(results)
    assert tally["OK"] == 1, tally
    assert set(tally) <= {"OK", "ABORTED/CONCURRENT_OPERATION", "FAILED_PRECONDITION/COUPON_ALREADY_REDEEMED"}, tally
    events = await (
        await ledger_db.execute(
            "SELECT count(*) FROM redemption.history WHERE code = %s AND event = 'REDEEMED_EVENT'", (code,)
        )
    ).fetchone()
    assert events == (1,)


async def test_32_parallel_redeems_of_a_three_use_code(ledger, ledger_db):
    _, code, holder = await ledger.held_coupon(allow_multi_redemption=True, max_redemptions_per_user=3)
    results = await asyncio.gather(
        *(
            settled(
                lambda: ledger.next_stub().RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
            )
            for _ in range(32)
        )
    )
    assert collections.Counter(results) == {"OK": 3, "FAILED_PRECONDITION/REDEMPTION_LIMIT_REACHED": 29}
    row = await (
        await ledger_db.execute("SELECT redemption_count, state FROM redemption.coupons WHERE code = %s", (code,))
    ).fetchone()
    assert row == (3, "REDEEMED")


async def test_32_parallel_random_assignments_respect_the_per_user_limit(ledger, ledger_db):
    book_id, _ = await ledger.book(40, max_assignments_per_user=2, allow_self_claim=True)
    user = ledger.caller()
    results = await asyncio.gather(
        *(
            outcome(
                ledger.next_stub().AssignRandomCoupon(
                    pb.AssignRandomCouponRequest(book_id=book_id), metadata=user.metadata
                )
            )
            for _ in range(32)
        )
    )
    assert collections.Counter(results) == {"OK": 2, "FAILED_PRECONDITION/ASSIGNMENT_LIMIT_REACHED": 30}
    held = await (
        await ledger_db.execute(
            "SELECT count(*) FROM redemption.coupons WHERE book_id = %s AND user_id = %s", (book_id, user.user_id)
        )
    ).fetchone()
    assert held == (2,)


async def test_1000_random_assignments_from_16_callers(ledger, ledger_db):
    book_id, codes = await ledger.book(2000)
    users = [ledger.caller() for _ in range(50)]
    admin = ledger.admin.metadata
    assigned: list[str] = []

    async def caller(worker: int):
        for turn in range(1000 // 16 + (worker < 1000 % 16)):
            user = users[(worker * 7 + turn) % len(users)]
            while True:  # ABORTED only when every remaining code is being assigned at once: retry
                try:
                    coupon = await ledger.next_stub().AssignRandomCoupon(
                        pb.AssignRandomCouponRequest(book_id=book_id, user_id=user.user_id), metadata=admin
                    )
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.ABORTED, error.details()
            assert coupon.user_id == user.user_id
            assigned.append(coupon.code)

    await asyncio.gather(*(caller(worker) for worker in range(16)))
    assert len(assigned) == 1000 and len(set(assigned)) == 1000 and set(assigned) <= set(codes)
    await assert_ledger_consistent(ledger, ledger_db, book_id)
    by_state = dict(
        await (
            await ledger_db.execute(
                "SELECT state, count(*) FROM redemption.coupons WHERE book_id = %s GROUP BY state", (book_id,)
            )
        ).fetchall()
    )
    assert by_state == {"AVAILABLE": 1000, "ASSIGNED": 1000}
    events = await (
        await ledger_db.execute(
            "SELECT count(*), count(DISTINCT code) FROM redemption.history WHERE book_id = %s", (book_id,)
        )
    ).fetchone()
    assert events == (1000, 1000)


async def assert_ledger_consistent(ledger, ledger_db, book_id: str) -> None:
    """GetBookCounts equals a count of the ledger's rows; every (user, book) counter equals the codes held."""
    counts = await ledger.internal.GetBookCounts(pb.GetBookCountsRequest(book_id=book_id), metadata=ledger.service)
    row = await (
        await ledger_db.execute(
            """
        SELECT count(*), count(*) FILTER (WHERE state = 'AVAILABLE'),
               count(*) FILTER (WHERE state = 'ASSIGNED' AND NOT coalesce(lock_expires_at > now(), false)),
               count(*) FILTER (WHERE coalesce(lock_expires_at > now(), false)),
               count(*) FILTER (WHERE state = 'REDEEMED' AND NOT coalesce(lock_expires_at > now(), false)),
               coalesce(sum(redemption_count), 0)
        FROM redemption.coupons WHERE book_id = %s""",
            (book_id,),
        )
    ).fetchone()
    assert (counts.total, counts.available, counts.assigned, counts.locked, counts.redeemed, counts.redemptions) == row
    mismatched = await (
        await ledger_db.execute(
            """
        SELECT h.user_id, h.held, count(c.code) FROM redemption.holdings h
        LEFT JOIN redemption.coupons c ON c.book_id = h.book_id AND c.user_id = h.user_id
        WHERE h.book_id = %s GROUP BY h.user_id, h.held HAVING h.held <> count(c.code)""",
            (book_id,),
        )
    ).fetchall()
    assert mismatched == []
    unaccounted = await (
        await ledger_db.execute(
            """
        SELECT count(*) FROM redemption.coupons c WHERE c.book_id = %s AND c.user_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM redemption.holdings h WHERE h.book_id = c.book_id AND h.user_id = c.user_id)
        """,
            (book_id,),
        )
    ).fetchone()
    assert unaccounted == (0,)


async def test_lock_unlock_redeem_sequences_never_abort_spuriously(ledger):
    """Each code has one caller, so any ABORTED would be an advisory lock outliving its transaction."""
    book_id, codes = await ledger.book(48, lock_ttl_seconds=60)
    holders = [ledger.caller() for _ in codes]
    for code, holder in zip(codes, holders, strict=True):
        await ledger.assign(code, holder)

    async def checkout(code: str, metadata) -> None:
        for _ in range(2):
            await ledger.next_stub().LockCoupon(pb.LockCouponRequest(code=code), metadata=metadata)
            await ledger.next_stub().UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=metadata)
        lock = await ledger.next_stub().LockCoupon(pb.LockCouponRequest(code=code), metadata=metadata)
        await ledger.next_stub().RedeemCoupon(
            pb.RedeemCouponRequest(code=code, lock_id=lock.lock_id), metadata=metadata
        )

    await asyncio.gather(*(checkout(code, holder.metadata) for code, holder in zip(codes, holders, strict=True)))
    counts = await ledger.internal.GetBookCounts(pb.GetBookCountsRequest(book_id=book_id), metadata=ledger.service)
    assert (counts.redeemed, counts.locked, counts.assigned) == (48, 0, 0)


async def test_parallel_retries_of_one_random_assignment_assign_one_code(ledger, ledger_db):
    """No code lock serializes random picks: the retries race to remember the request id, the losers are
    undone whole and answered with the winner's coupon."""
    book_id, _ = await ledger.book(40, allow_self_claim=True)
    user = ledger.caller()
    for _ in range(5):  # the statement pool grows while callers wait: give the race connections to race on
        probes = (pb.RedeemCouponRequest(code=f"NO-SUCH-{n}") for n in range(16))
        await asyncio.gather(*(outcome(ledger.next_stub().RedeemCoupon(p, metadata=user.metadata)) for p in probes))
    request = pb.AssignRandomCouponRequest(book_id=book_id, request_id="one-claim")
    answers = await asyncio.gather(
        *(ledger.next_stub().AssignRandomCoupon(request, metadata=user.metadata) for _ in range(16))
    )
    assert len({answer.code for answer in answers}) == 1
    counts = await (
        await ledger_db.execute(
            """SELECT (SELECT count(*) FROM redemption.coupons WHERE book_id = %(b)s AND user_id IS NOT NULL),
                (SELECT held FROM redemption.holdings WHERE book_id = %(b)s),
                (SELECT count(*) FROM redemption.history WHERE book_id = %(b)s)""",
            {"b": book_id},
        )
    ).fetchone()
    assert counts == (1, 1, 1)
