"""The truthful state model: REDEEMED only when no use is left, EXPIRED past valid_until (derived at read
time), and every read, filter and count saying the same."""

import asyncio
import datetime as dt

import grpc
from google.protobuf import timestamp_pb2

from coupons.redemption.v1 import redemption_pb2 as pb
from tests.support import expect_error


def _at(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _counts(ledger, book_id: str) -> pb.BookCounts:
    return await ledger.internal.GetBookCounts(pb.GetBookCountsRequest(book_id=book_id), metadata=ledger.service)


async def _listed(ledger, book_id: str, state: int) -> list[str]:
    page = await ledger.stub.ListBookCoupons(
        pb.ListBookCouponsRequest(book_id=book_id, state=state), metadata=ledger.admin.metadata
    )
    return [c.code for c in page.coupons]


async def test_a_multi_use_coupon_reads_assigned_until_its_last_use(ledger, ledger_db):
    book_id, code, holder = await ledger.held_coupon(allow_multi_redemption=True, max_redemptions_per_user=3)
    seen = []
    for _ in range(3):
        await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
        read = await ledger.stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=holder.metadata)
        counts = await _counts(ledger, book_id)
        mine = await ledger.stub.ListUserCoupons(
            pb.ListUserCouponsRequest(user_id="me", state=read.state), metadata=holder.metadata
        )
        seen.append(
            (
                read.state,
                read.redemption_count,
                read.remaining_redemptions,
                (counts.assigned, counts.redeemed, counts.redemptions),
                [c.code for c in mine.coupons],
                await _listed(ledger, book_id, read.state),
            )
        )
    assert seen == [
        (pb.ASSIGNED, 1, 2, (1, 0, 1), [code], [code]),
        (pb.ASSIGNED, 2, 1, (1, 0, 2), [code], [code]),
        (pb.REDEEMED, 3, 0, (0, 1, 3), [code], [code]),
    ]
    stored = await (await ledger_db.execute("SELECT state FROM redemption.coupons WHERE code = %s", (code,))).fetchone()
    assert stored == ("REDEEMED",)


async def test_a_change_of_the_books_limit_restates_its_coupons(ledger):
    book_id, code, holder = await ledger.held_coupon(allow_multi_redemption=True, max_redemptions_per_user=2)
    for _ in range(2):
        await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
    assert (await ledger.stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=holder.metadata)).state == pb.REDEEMED
    rules = pb.BookRules(book_id=book_id, version=2, allow_multi_redemption=True, max_redemptions_per_user=3)
    await ledger.internal.PutBookRules(pb.PutBookRulesRequest(rules=rules), metadata=ledger.service)
    read = await ledger.stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=holder.metadata)
    assert (read.state, read.remaining_redemptions) == (pb.ASSIGNED, 1)
    redeemed = await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
    assert (redeemed.coupon.state, redeemed.remaining_redemptions) == (pb.REDEEMED, 0)


async def test_codes_past_valid_until_read_expired(ledger):
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    book_id, codes = await ledger.book(4, valid_until=_at(until), lock_ttl_seconds=60)
    holder = ledger.caller()
    for code in codes[:3]:
        await ledger.assign(code, holder)
    await ledger.stub.LockCoupon(pb.LockCouponRequest(code=codes[1]), metadata=holder.metadata)
    await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=codes[2]), metadata=holder.metadata)
    before = await _counts(ledger, book_id)
    assert (before.available, before.assigned, before.locked, before.redeemed, before.expired) == (1, 1, 1, 1, 0)

    await asyncio.sleep(max((until - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 0.2)
    states = {
        code: (await ledger.stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=ledger.admin.metadata)).state
        for code in codes
    }
    # A used-up coupon stays REDEEMED; every code with a use left (held, locked or not) is EXPIRED.
    assert states == {codes[0]: pb.EXPIRED, codes[1]: pb.EXPIRED, codes[2]: pb.REDEEMED, codes[3]: pb.EXPIRED}
    after = await _counts(ledger, book_id)
    assert (after.available, after.assigned, after.locked, after.redeemed, after.expired) == (0, 0, 0, 1, 3)
    assert sorted(await _listed(ledger, book_id, pb.EXPIRED)) == sorted([codes[0], codes[1], codes[3]])
    assert await _listed(ledger, book_id, pb.LOCKED) == []
    mine = await ledger.stub.ListUserCoupons(
        pb.ListUserCouponsRequest(user_id="me", state=pb.EXPIRED), metadata=holder.metadata
    )
    assert sorted(c.code for c in mine.coupons) == sorted(codes[:2])
    read = await ledger.stub.GetCoupon(pb.GetCouponRequest(code=codes[1]), metadata=holder.metadata)
    assert not read.HasField("lock_expire_time")
    await expect_error(
        ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=codes[0]), metadata=holder.metadata),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BOOK_EXPIRED",
    )
