"""ValidateCoupon: what RedeemCoupon would answer now, with the same reasons, changing nothing."""

import asyncio
import time

import grpc
import psycopg

from coupons.redemption.v1 import redemption_pb2 as pb
from services.redemption.repository import advisory_key
from tests.support import rich_error
from tests.test_shared_codes import shared_code


async def answer(call) -> tuple:
    """(OK, discount, remaining) or (status, reason, message)."""
    try:
        response = await call
        return ("OK", response.discount, response.remaining_redemptions)
    except grpc.aio.AioRpcError as error:
        rich = rich_error(error)
        return (rich.code.name, rich.reason, rich.message)


async def snapshot(ledger_db) -> tuple:
    """Everything a redemption could change, in the whole ledger."""
    row = await (
        await ledger_db.execute(
            "SELECT (SELECT count(*) FROM redemption.history), (SELECT max(id) FROM redemption.history), "
            "(SELECT md5(string_agg(c::text, ',' ORDER BY code)) FROM redemption.coupons c), "
            "(SELECT md5(coalesce(string_agg(s::text, ',' ORDER BY code, user_id), '')) "
            "FROM redemption.shared_redemptions s), (SELECT count(*) FROM redemption.idempotency_keys)"
        )
    ).fetchone()
    return tuple(row)


async def test_validate_changes_nothing_and_gives_redeems_reasons(ledger, ledger_db):
    discount = {"discount_type": pb.DISCOUNT_TYPE_PERCENTAGE, "percent_off": "10", "currency": "EUR"}
    _, personal, holder = await ledger.held_coupon(
        allow_multi_redemption=True, max_redemptions_per_user=5, min_order_amount="20", **discount
    )
    _, used_up, used_up_holder = await ledger.held_coupon()
    await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=used_up), metadata=used_up_holder.metadata)
    _, locked, locker = await ledger.held_coupon()
    await ledger.stub.LockCoupon(pb.LockCouponRequest(code=locked), metadata=locker.metadata)
    _, shared = await shared_code(ledger, total=1)
    stranger = ledger.caller()
    # (caller, code, order amount, currency): every reason redeem gives, and a success of each kind.
    cases = [
        (holder, personal, "59.90", "EUR"),  # OK, 5.99
        (holder, personal, "19.99", "EUR"),  # ORDER_BELOW_MINIMUM
        (holder, personal, "", ""),  # ORDER_AMOUNT_REQUIRED
        (holder, personal, "30", "USD"),  # CURRENCY_MISMATCH
        (stranger, personal, "59.90", "EUR"),  # COUPON_NOT_FOUND: not theirs
        (stranger, "NO-SUCH-CODE-AT-ALL", "", ""),  # COUPON_NOT_FOUND
        (used_up_holder, used_up, "", ""),  # COUPON_ALREADY_REDEEMED
        (locker, locked, "", ""),  # COUPON_LOCKED
        (stranger, shared, "", ""),  # OK for anyone
        (holder, personal, "1.001", "EUR"),  # INVALID_ARGUMENT
    ]

    def calls(method, request_type):
        """Each case's call, made only when asked for (a gRPC call starts when it is made)."""
        return [
            lambda caller=caller, code=code, amount=amount, currency=currency: method(
                request_type(code=code, order_amount=amount, currency=currency), metadata=caller.metadata
            )
            for caller, code, amount, currency in cases
        ]

    before = await snapshot(ledger_db)
    validated = await asyncio.gather(
        *(answer(c()) for c in calls(ledger.stub.ValidateCoupon, pb.ValidateCouponRequest))
    )
    assert await snapshot(ledger_db) == before
    assert [v[1] if v[0] != "OK" else v[:2] for v in validated] == [
        ("OK", "5.99"),
        "ORDER_BELOW_MINIMUM",
        "ORDER_AMOUNT_REQUIRED",
        "CURRENCY_MISMATCH",
        "COUPON_NOT_FOUND",
        "COUPON_NOT_FOUND",
        "COUPON_ALREADY_REDEEMED",
        "COUPON_LOCKED",
        ("OK", ""),
        "INVALID_ARGUMENT",
    ]
    # Redeem answers exactly the same, one call at a time (each success uses the code up).
    redeemed = [await answer(c()) for c in calls(ledger.stub.RedeemCoupon, pb.RedeemCouponRequest)]
    assert [r[:2] for r in redeemed] == [v[:2] for v in validated]
    assert [r[2] for r in redeemed if r[0] != "OK"] == [v[2] for v in validated if v[0] != "OK"]
    # Validate's remaining count is what the redeem then left.
    assert [v[2] for v in validated if v[0] == "OK"] == [r[2] for r in redeemed if r[0] == "OK"] == [4, 0]


async def test_validate_never_waits_for_a_busy_code(ledger, database_url):
    """While another transaction holds a code's advisory lock, a redeem of it waits (shared) or is refused
    as busy (personal); validate answers at once."""
    _, shared = await shared_code(ledger, total=10)
    _, personal, holder = await ledger.held_coupon()
    user = ledger.caller()
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for code in (shared, personal):
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(code),))
        waiting = asyncio.ensure_future(
            ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=shared), metadata=user.metadata)
        )
        started = time.monotonic()
        answers = [
            await answer(ledger.stub.ValidateCoupon(pb.ValidateCouponRequest(code=shared), metadata=user.metadata)),
            await answer(ledger.stub.ValidateCoupon(pb.ValidateCouponRequest(code=personal), metadata=holder.metadata)),
            await answer(ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=personal), metadata=holder.metadata)),
        ]
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the shared redeem waits its turn
    assert answers == [("OK", "", 0), ("OK", "", 0), ("ABORTED", "CONCURRENT_OPERATION", answers[2][2])]
    assert (await waiting).coupon.redemption_count == 1
