"""Shared codes: no holder, any signed-in user redeems within the code's global cap and their own; a hot
shared code under 1,000 parallel callers stays exact and refuses no one within the caps as busy."""

import asyncio
import collections
import time

import grpc

from coupons.redemption.v1 import redemption_pb2 as pb
from tests.support import expect_error
from tests.test_redemption_concurrency import outcome

FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def shared_code(ledger, total: int, per_user: int = 1) -> tuple[str, str]:
    """(book_id, code): a shared book with one code."""
    book_id, (code,) = await ledger.book(
        1,
        shared=True,
        max_redemptions_total=total,
        allow_multi_redemption=per_user > 1,
        max_redemptions_per_user=per_user,
    )
    return book_id, code


async def counted(ledger_db, code: str) -> tuple:
    """The code's counter, its REDEEMED events, the sum of its per-user counts, and users over their cap."""
    row = await (
        await ledger_db.execute(
            """SELECT c.redemption_count, c.state,
                (SELECT count(*) FROM redemption.history h WHERE h.code = c.code AND h.event = 'REDEEMED_EVENT'),
                (SELECT coalesce(sum(s.redemptions), 0) FROM redemption.shared_redemptions s WHERE s.code = c.code),
                (SELECT count(*) FROM (SELECT user_id, count(*) AS n FROM redemption.history h
                    WHERE h.code = c.code AND h.event = 'REDEEMED_EVENT' GROUP BY user_id) u
                    JOIN redemption.shared_redemptions s ON s.code = c.code AND s.user_id = u.user_id
                    WHERE s.redemptions <> u.n)
            FROM redemption.coupons c WHERE c.code = %s""",
            (code,),
        )
    ).fetchone()
    return tuple(row)


async def test_any_user_redeems_a_shared_code_within_both_caps(ledger, ledger_db):
    book_id, code = await shared_code(ledger, total=3)
    stub = ledger.stub
    first, second, third, late = (ledger.caller() for _ in range(4))

    read = await stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=first.metadata)
    assert (read.shared, read.state, read.user_id, read.max_redemptions) == (True, pb.AVAILABLE, "", 3)
    redeemed = await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=first.metadata)
    assert (redeemed.coupon.state, redeemed.coupon.redemption_count, redeemed.remaining_redemptions) == (
        pb.AVAILABLE,
        1,
        0,  # the caller's own cap (1) is used up, though the code has 2 left
    )
    error = await expect_error(
        stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=first.metadata), FAILED, "USER_LIMIT_REACHED"
    )
    assert error.metadata["user_redemptions"] == "1"
    await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=second.metadata)
    last = await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=third.metadata)
    assert (last.coupon.state, last.coupon.redemption_count, last.coupon.remaining_redemptions) == (pb.REDEEMED, 3, 0)
    error = await expect_error(
        stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=late.metadata), FAILED, "SHARED_LIMIT_REACHED"
    )
    assert error.message == (
        "Cannot redeem a REDEEMED coupon: the shared code was redeemed 3 of the 3 times it allows."
    )

    # Never held, locked or assigned; its book is not handed out.
    await expect_error(
        stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=late.metadata), FAILED, "COUPON_SHARED"
    )
    await expect_error(ledger.assign(code, late), FAILED, "COUPON_SHARED")
    await expect_error(
        stub.AssignRandomCoupon(
            pb.AssignRandomCouponRequest(book_id=book_id, user_id=late.user_id), metadata=ledger.admin.metadata
        ),
        FAILED,
        "BOOK_SHARED",
    )
    counts = await ledger.internal.GetBookCounts(pb.GetBookCountsRequest(book_id=book_id), metadata=ledger.service)
    assert (counts.total, counts.available, counts.redeemed, counts.redemptions) == (1, 0, 1, 3)
    history = await stub.ListCouponHistory(pb.ListCouponHistoryRequest(code=code), metadata=ledger.admin.metadata)
    assert [(e.event, e.user_id) for e in history.entries] == [
        (pb.REDEEMED_EVENT, user.user_id) for user in (first, second, third)
    ]
    assert await counted(ledger_db, code) == (3, "REDEEMED", 3, 3, 0)


async def test_a_hot_shared_code_1000_users_cap_500(ledger, ledger_db):
    _, code = await shared_code(ledger, total=500)
    users = [ledger.caller() for _ in range(1000)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            outcome(ledger.next_stub().RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=user.metadata))
            for user in users
        )
    )
    elapsed = time.monotonic() - started
    tally = collections.Counter(results)
    print(f"hot shared code: 1,000 users, cap 500: {dict(tally)} in {elapsed:.2f} s")
    # Exactly the cap, and every other caller refused by the cap alone: none as busy or unavailable.
    assert tally == {"OK": 500, "FAILED_PRECONDITION/SHARED_LIMIT_REACHED": 500}, tally
    assert await counted(ledger_db, code) == (500, "REDEEMED", 500, 500, 0)


async def test_one_user_with_a_cap_of_2_gets_exactly_2_of_32_parallel_attempts(ledger, ledger_db):
    _, code = await shared_code(ledger, total=100, per_user=2)
    user = ledger.caller()
    results = await asyncio.gather(
        *(
            outcome(ledger.next_stub().RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=user.metadata))
            for _ in range(32)
        )
    )
    assert collections.Counter(results) == {"OK": 2, "FAILED_PRECONDITION/USER_LIMIT_REACHED": 30}
    assert await counted(ledger_db, code) == (2, "AVAILABLE", 2, 2, 0)
