"""RollbackRedemption: undo one redemption within the book's window, restoring every count; idempotent;
exact under a racing redeem and a second rollback."""

import asyncio
import collections

import grpc

from coupons.redemption.v1 import redemption_pb2 as pb
from tests.support import expect_error
from tests.test_redemption_concurrency import outcome, settled
from tests.test_shared_codes import shared_code

FAILED = grpc.StatusCode.FAILED_PRECONDITION


def rollback(ledger, code: str, order: str, request_id: str = "", metadata=None):
    return ledger.next_stub().RollbackRedemption(
        pb.RollbackRedemptionRequest(code=code, order_reference=order, reason="order cancelled", request_id=request_id),
        metadata=metadata or ledger.service,
    )


def redeem(ledger, code: str, user, order: str):
    return ledger.next_stub().RedeemCoupon(
        pb.RedeemCouponRequest(code=code, order_reference=order), metadata=user.metadata
    )


async def consistent(ledger_db, code: str) -> tuple:
    """(count, REDEEMED - ROLLED_BACK events, per-user counts that differ from their events)."""
    row = await (
        await ledger_db.execute(
            """SELECT c.redemption_count,
                (SELECT count(*) FILTER (WHERE event = 'REDEEMED_EVENT')
                        - count(*) FILTER (WHERE event = 'ROLLED_BACK_EVENT')
                    FROM redemption.history h WHERE h.code = c.code),
                (SELECT count(*) FROM redemption.shared_redemptions s WHERE s.code = c.code AND s.redemptions <>
                    (SELECT count(*) FILTER (WHERE event = 'REDEEMED_EVENT')
                        - count(*) FILTER (WHERE event = 'ROLLED_BACK_EVENT')
                     FROM redemption.history h WHERE h.code = c.code AND h.user_id = s.user_id))
            FROM redemption.coupons c WHERE c.code = %s""",
            (code,),
        )
    ).fetchone()
    return tuple(row)


async def test_a_rollback_restores_the_coupon_and_is_in_history(ledger):
    _, code, holder = await ledger.held_coupon(
        discount_type=pb.DISCOUNT_TYPE_FIXED_AMOUNT, amount_off="5", currency="EUR"
    )
    await ledger.stub.RedeemCoupon(
        pb.RedeemCouponRequest(code=code, order_reference="o-1", order_amount="30", currency="EUR"),
        metadata=holder.metadata,
    )
    await expect_error(rollback(ledger, code, "o-2"), grpc.StatusCode.NOT_FOUND, "REDEMPTION_NOT_FOUND")
    undone = await rollback(ledger, code, "o-1", metadata=ledger.admin.metadata)
    assert (undone.coupon.state, undone.coupon.redemption_count, undone.discount) == (pb.ASSIGNED, 0, "5")
    await expect_error(rollback(ledger, code, "o-1"), FAILED, "ALREADY_ROLLED_BACK")
    # The holder may use it again.
    again = await redeem(ledger, code, holder, "o-3")
    assert again.coupon.state == pb.REDEEMED
    history = await ledger.stub.ListCouponHistory(
        pb.ListCouponHistoryRequest(code=code), metadata=ledger.admin.metadata
    )
    entries = [(e.event, e.order_reference, e.reason, e.user_id) for e in history.entries]
    assert entries == [
        (pb.ASSIGNED_EVENT, "", "", holder.user_id),
        (pb.REDEEMED_EVENT, "o-1", "", holder.user_id),
        (pb.ROLLED_BACK_EVENT, "o-1", "order cancelled", holder.user_id),
        (pb.REDEEMED_EVENT, "o-3", "", holder.user_id),
    ]
    assert history.entries[2].undoes_id == history.entries[1].id
    # People cannot roll back, not even their own redemption.
    await expect_error(rollback(ledger, code, "o-3", metadata=holder.metadata), grpc.StatusCode.PERMISSION_DENIED)


async def test_a_rollback_is_idempotent_by_request_id_and_bound_by_the_window(ledger):
    _, code, holder = await ledger.held_coupon(rollback_window_seconds=1)
    await redeem(ledger, code, holder, "o-1")
    first = await rollback(ledger, code, "o-1", request_id="rb-1")
    assert first == await rollback(ledger, code, "o-1", request_id="rb-1")
    await redeem(ledger, code, holder, "o-2")
    await asyncio.sleep(1.2)
    error = await expect_error(rollback(ledger, code, "o-2"), FAILED, "ROLLBACK_WINDOW_PASSED")
    assert "rollback window has passed" in error.message


async def test_two_parallel_rollbacks_of_one_redemption_make_one(ledger, ledger_db):
    _, code = await shared_code(ledger, total=100)
    user = ledger.caller()
    await redeem(ledger, code, user, "o-1")
    results = await asyncio.gather(*(outcome(rollback(ledger, code, "o-1")) for _ in range(16)))
    assert collections.Counter(results) == {"OK": 1, "FAILED_PRECONDITION/ALREADY_ROLLED_BACK": 15}
    assert await consistent(ledger_db, code) == (0, 0, 0)


async def test_rollbacks_racing_redeems_keep_counts_equal_to_history(ledger, ledger_db):
    """Many rounds: a personal multi-use code and a shared code, each redeemed and rolled back in parallel."""
    _, personal, holder = await ledger.held_coupon(allow_multi_redemption=True, max_redemptions_per_user=50)
    _, shared = await shared_code(ledger, total=50, per_user=3)
    users = [ledger.caller() for _ in range(8)]
    for round_ in range(10):
        orders = [f"r{round_}-{i}" for i in range(4)]
        for order in orders:  # one redemption per order to roll back during the round
            await settled(lambda order=order: redeem(ledger, personal, holder, order))
        shared_orders = []
        for i, user in enumerate(users[:4]):
            order = f"s{round_}-{i}"
            if await outcome(redeem(ledger, shared, user, order)) == "OK":
                shared_orders.append(order)
        calls = [settled(lambda order=order: rollback(ledger, personal, order)) for order in orders]
        calls += [settled(lambda order=order: rollback(ledger, personal, order)) for order in orders[:2]]
        calls += [settled(lambda order=f"r{round_}-new-{i}": redeem(ledger, personal, holder, order)) for i in range(4)]
        calls += [settled(lambda order=order: rollback(ledger, shared, order)) for order in shared_orders]
        calls += [outcome(redeem(ledger, shared, user, f"s{round_}-new-{i}")) for i, user in enumerate(users)]
        await asyncio.gather(*calls)
        # Each round: 4 redemptions, each rolled back once (twice asked for 2 of them), 4 new ones.
        assert await consistent(ledger_db, personal) == (4 * (round_ + 1), 4 * (round_ + 1), 0)
        count, events, drift = await consistent(ledger_db, shared)
        assert (count, drift) == (events, 0)
    state = await (
        await ledger_db.execute("SELECT redemption_count, state FROM redemption.coupons WHERE code = %s", (shared,))
    ).fetchone()
    assert state[0] <= 50 and (state[1] == "REDEEMED") == (state[0] == 50)
