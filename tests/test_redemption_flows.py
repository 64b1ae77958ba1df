"""The coupon state machine over real gRPC and PostgreSQL: every transition and every refusal."""

import asyncio
import datetime as dt
import uuid

import grpc
from google.protobuf import timestamp_pb2

from coupons.redemption.v1 import redemption_pb2 as pb
from tests.support import expect_error

FAILED = grpc.StatusCode.FAILED_PRECONDITION


def _at(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_lock_unlock_redeem_with_history(ledger):
    book_id, code, holder = await ledger.held_coupon(lock_ttl_seconds=60)
    stub = ledger.stub

    locked = await stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata)
    assert locked.coupon.state == pb.LOCKED and uuid.UUID(locked.lock_id)
    expires = locked.lock_expire_time.ToDatetime(dt.UTC)
    assert 55 < (expires - dt.datetime.now(dt.UTC)).total_seconds() <= 61
    error = await expect_error(
        stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata), FAILED, "COUPON_ALREADY_LOCKED"
    )
    assert "already locked" in error.message

    unlocked = await stub.UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=holder.metadata)
    assert unlocked.state == pb.ASSIGNED and not unlocked.HasField("lock_expire_time")
    error = await expect_error(
        stub.UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=holder.metadata), FAILED, "COUPON_NOT_LOCKED"
    )
    assert error.message == "Cannot unlock an ASSIGNED coupon: it is not locked."

    redeemed = await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
    assert redeemed.coupon.state == pb.REDEEMED and redeemed.coupon.redemption_count == 1
    assert redeemed.remaining_redemptions == 0
    error = await expect_error(
        stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata),
        FAILED,
        "COUPON_ALREADY_REDEEMED",
    )
    assert error.message.startswith("Cannot redeem a REDEEMED coupon: it is single-use")
    error = await expect_error(
        stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata), FAILED, "COUPON_ALREADY_REDEEMED"
    )
    assert error.message.startswith("Cannot lock a REDEEMED coupon")

    history = await stub.ListCouponHistory(pb.ListCouponHistoryRequest(code=code), metadata=ledger.admin.metadata)
    assert [e.event for e in history.entries] == [
        pb.ASSIGNED_EVENT,
        pb.LOCKED_EVENT,
        pb.UNLOCKED_EVENT,
        pb.REDEEMED_EVENT,
    ]
    assert history.entries[0].actor_id == ledger.admin.user_id
    assert {e.user_id for e in history.entries} == {holder.user_id}
    assert history.entries[1].actor_id == holder.user_id
    book_history = await stub.ListBookHistory(
        pb.ListBookHistoryRequest(book_id=book_id, page_size=3), metadata=ledger.admin.metadata
    )
    assert len(book_history.entries) == 3 and book_history.next_page_token
    rest = await stub.ListBookHistory(
        pb.ListBookHistoryRequest(book_id=book_id, page_token=book_history.next_page_token),
        metadata=ledger.admin.metadata,
    )
    assert [e.id for e in [*book_history.entries, *rest.entries]] == [e.id for e in history.entries]


async def test_locked_coupon_needs_its_lock_id(ledger):
    _, code, holder = await ledger.held_coupon()
    stub = ledger.stub
    lock = await stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata)

    error = await expect_error(
        stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata), FAILED, "COUPON_LOCKED"
    )
    until = lock.lock_expire_time.ToDatetime(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    assert error.message == f"Coupon {code} is locked until {until}: redeem with its lock id or unlock it first."
    await expect_error(
        stub.RedeemCoupon(pb.RedeemCouponRequest(code=code, lock_id=str(uuid.uuid4())), metadata=holder.metadata),
        FAILED,
        "WRONG_LOCK_ID",
    )
    error = await expect_error(
        stub.RedeemCoupon(pb.RedeemCouponRequest(code=code, lock_id="not-a-uuid"), metadata=holder.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "lock_id" in error.field_violations

    redeemed = await stub.RedeemCoupon(
        pb.RedeemCouponRequest(code=code, lock_id=lock.lock_id), metadata=holder.metadata
    )
    assert redeemed.coupon.state == pb.REDEEMED and not redeemed.coupon.HasField("lock_expire_time")


async def test_multi_redemption_until_the_limit(ledger):
    _, code, holder = await ledger.held_coupon(allow_multi_redemption=True, max_redemptions_per_user=3)
    stub = ledger.stub
    remaining = []
    for _ in range(2):
        redeemed = await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
        remaining.append(redeemed.remaining_redemptions)
        # The truthful state model: with uses left the coupon reads ASSIGNED, not REDEEMED.
        assert redeemed.coupon.state == pb.ASSIGNED
        assert redeemed.coupon.remaining_redemptions == redeemed.remaining_redemptions
    # With redemptions left, a checkout may lock it again and redeem with the lock.
    lock = await stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata)
    last = await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code, lock_id=lock.lock_id), metadata=holder.metadata)
    remaining.append(last.remaining_redemptions)
    assert remaining == [2, 1, 0]
    assert last.coupon.state == pb.REDEEMED and last.coupon.redemption_count == 3 and last.coupon.max_redemptions == 3
    error = await expect_error(
        stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata),
        FAILED,
        "REDEMPTION_LIMIT_REACHED",
    )
    assert error.metadata["max_redemptions"] == "3"
    await expect_error(
        stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata), FAILED, "REDEMPTION_LIMIT_REACHED"
    )


async def test_expired_lock_is_no_lock(ledger):
    _, code, holder = await ledger.held_coupon(lock_ttl_seconds=1)
    stub = ledger.stub
    first = await stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata)
    await asyncio.sleep(1.2)

    read = await stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=holder.metadata)
    assert read.state == pb.ASSIGNED and not read.HasField("lock_expire_time")
    await expect_error(
        stub.UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=holder.metadata), FAILED, "COUPON_NOT_LOCKED"
    )
    second = await stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata)
    assert second.lock_id != first.lock_id
    await asyncio.sleep(1.2)
    redeemed = await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
    assert redeemed.coupon.state == pb.REDEEMED

    history = await stub.ListCouponHistory(pb.ListCouponHistoryRequest(code=code), metadata=ledger.admin.metadata)
    assert [e.event for e in history.entries] == [
        pb.ASSIGNED_EVENT,
        pb.LOCKED_EVENT,
        pb.LOCK_EXPIRED_EVENT,
        pb.LOCKED_EVENT,
        pb.LOCK_EXPIRED_EVENT,
        pb.REDEEMED_EVENT,
    ]


async def test_assignment_refusals(ledger):
    stub, admin = ledger.stub, ledger.admin.metadata
    book_id, codes = await ledger.book(3, max_assignments_per_user=2, allow_self_claim=True)
    user = ledger.caller()
    for code in codes[:2]:
        assigned = await ledger.assign(code, user)
        assert assigned.state == pb.ASSIGNED and assigned.user_id == user.user_id
    error = await expect_error(ledger.assign(codes[2], user), FAILED, "ASSIGNMENT_LIMIT_REACHED")
    assert "holds 2 of at most 2 codes of this book" in error.message
    await expect_error(
        stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id=book_id), metadata=user.metadata),
        FAILED,
        "ASSIGNMENT_LIMIT_REACHED",
    )
    error = await expect_error(ledger.assign(codes[0], ledger.caller()), FAILED, "COUPON_NOT_AVAILABLE")
    assert error.message.startswith("Cannot assign an ASSIGNED coupon")
    await expect_error(ledger.assign("NO-SUCH-CODE", user), grpc.StatusCode.NOT_FOUND, "COUPON_NOT_FOUND")

    empty_book, _ = await ledger.book(0, allow_self_claim=True)
    await expect_error(
        stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id=empty_book, user_id="me"), metadata=user.metadata),
        FAILED,
        "NO_CODES_AVAILABLE",
    )
    await expect_error(
        stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id=str(uuid.uuid4())), metadata=user.metadata),
        grpc.StatusCode.NOT_FOUND,
        "BOOK_NOT_FOUND",
    )
    await expect_error(
        stub.AssignRandomCoupon(
            pb.AssignRandomCouponRequest(book_id=book_id, user_id=ledger.caller().user_id), metadata=user.metadata
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # An admin may assign to anyone.
    other = ledger.caller()
    coupon = await stub.AssignRandomCoupon(
        pb.AssignRandomCouponRequest(book_id=book_id, user_id=other.user_id), metadata=admin
    )
    assert coupon.code == codes[2] and coupon.user_id == other.user_id


async def test_archived_and_validity_window_refuse(ledger):
    now = dt.datetime.now(dt.UTC)
    cases = [
        ({"archived": True}, "BOOK_ARCHIVED"),
        ({"valid_from": _at(now + dt.timedelta(days=1))}, "BOOK_NOT_YET_VALID"),
        ({"valid_until": _at(now - dt.timedelta(days=1))}, "BOOK_EXPIRED"),
    ]
    for rules, reason in cases:
        book_id, code, holder = await ledger.held_coupon()
        changed = await ledger.internal.PutBookRules(
            pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=2, **rules)), metadata=ledger.service
        )
        assert changed.version == 2
        await expect_error(
            ledger.stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id=book_id), metadata=holder.metadata),
            FAILED,
            reason,
        )
        await expect_error(
            ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata), FAILED, reason
        )
        await expect_error(
            ledger.stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata), FAILED, reason
        )


async def test_put_book_rules_ignores_older_versions(ledger):
    book_id, _ = await ledger.book(0, max_assignments_per_user=5)
    newer = await ledger.internal.PutBookRules(
        pb.PutBookRulesRequest(
            rules=pb.BookRules(
                book_id=book_id,
                version=3,
                max_assignments_per_user=7,
                allow_multi_redemption=True,
                max_redemptions_per_user=4,
            )
        ),
        metadata=ledger.service,
    )
    assert (newer.version, newer.max_assignments_per_user, newer.max_redemptions_per_user) == (3, 7, 4)
    assert newer.lock_ttl_seconds == 300
    stale = await ledger.internal.PutBookRules(
        pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=2, max_assignments_per_user=1)),
        metadata=ledger.service,
    )
    assert (stale.version, stale.max_assignments_per_user) == (3, 7)
    error = await expect_error(
        ledger.internal.PutBookRules(
            pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=4, lock_ttl_seconds=4000)),
            metadata=ledger.service,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "rules.lock_ttl_seconds" in error.field_violations


async def test_user_sees_only_their_own_coupons(ledger):
    _, code, holder = await ledger.held_coupon()
    stranger, stub = ledger.caller(), ledger.stub
    missing = await expect_error(
        stub.GetCoupon(pb.GetCouponRequest(code="NO-SUCH-CODE"), metadata=stranger.metadata),
        grpc.StatusCode.NOT_FOUND,
        "COUPON_NOT_FOUND",
    )
    calls = {
        "get": lambda c: stub.GetCoupon(pb.GetCouponRequest(code=c), metadata=stranger.metadata),
        "lock": lambda c: stub.LockCoupon(pb.LockCouponRequest(code=c), metadata=stranger.metadata),
        "unlock": lambda c: stub.UnlockCoupon(pb.UnlockCouponRequest(code=c), metadata=stranger.metadata),
        "redeem": lambda c: stub.RedeemCoupon(pb.RedeemCouponRequest(code=c), metadata=stranger.metadata),
    }
    for name, call in calls.items():
        theirs = await expect_error(call(code), grpc.StatusCode.NOT_FOUND, "COUPON_NOT_FOUND")
        absent = await expect_error(call("NO-SUCH-CODE"), grpc.StatusCode.NOT_FOUND, "COUPON_NOT_FOUND")
        assert theirs.message.replace(code, "X") == absent.message.replace("NO-SUCH-CODE", "X"), name
    assert missing.message == "coupon NO-SUCH-CODE was not found."
    assert (await stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=holder.metadata)).state == pb.ASSIGNED

    await expect_error(
        stub.ListUserCoupons(pb.ListUserCouponsRequest(user_id=holder.user_id), metadata=stranger.metadata),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # An admin may act on anyone's coupon.
    redeemed = await stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=ledger.admin.metadata)
    assert redeemed.coupon.user_id == holder.user_id


async def test_user_cannot_call_admin_or_internal_methods(ledger):
    book_id, (code,) = await ledger.book(1)
    user, stub = ledger.caller(), ledger.stub
    calls = [
        stub.AssignCoupon(pb.AssignCouponRequest(code=code, user_id=user.user_id), metadata=user.metadata),
        stub.ListBookCoupons(pb.ListBookCouponsRequest(book_id=book_id), metadata=user.metadata),
        stub.ListCouponHistory(pb.ListCouponHistoryRequest(code=code), metadata=user.metadata),
        stub.ListBookHistory(pb.ListBookHistoryRequest(book_id=book_id), metadata=user.metadata),
        ledger.internal.PutBookRules(
            pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=9)), metadata=user.metadata
        ),
        ledger.internal.AddCodes(pb.AddCodesRequest(book_id=book_id, codes=["X-1"]), metadata=user.metadata),
        ledger.internal.GetBookCounts(pb.GetBookCountsRequest(book_id=book_id), metadata=user.metadata),
        ledger.internal.GetAssignmentCounts(pb.GetAssignmentCountsRequest(book_id=book_id), metadata=user.metadata),
        ledger.internal.BulkAssign(
            pb.BulkAssignRequest(book_id=book_id, assignments=[pb.UserCodeCount(user_id=user.user_id, count=1)]),
            metadata=user.metadata,
        ),
    ]
    for call, reason in zip(calls, ["PERMISSION_DENIED"] * 4 + ["SERVICE_ONLY"] * 5, strict=True):
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, reason)
    await expect_error(stub.GetCoupon(pb.GetCouponRequest(code=code)), grpc.StatusCode.UNAUTHENTICATED)


async def test_bad_input_is_invalid_argument(ledger):
    user, stub, admin = ledger.caller(), ledger.stub, ledger.admin.metadata
    cases = [
        (stub.LockCoupon(pb.LockCouponRequest(), metadata=user.metadata), "code"),
        (stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id="nope"), metadata=user.metadata), "book_id"),
        (stub.AssignCoupon(pb.AssignCouponRequest(code="X", user_id="bad"), metadata=admin), "user_id"),
        (
            stub.ListUserCoupons(pb.ListUserCouponsRequest(user_id="me", page_size=-1), metadata=user.metadata),
            "page_size",
        ),
        (
            stub.ListUserCoupons(
                pb.ListUserCouponsRequest(user_id="me", page_token="garbage!"), metadata=user.metadata
            ),
            "page_token",
        ),
        (
            ledger.internal.AddCodes(
                pb.AddCodesRequest(book_id=str(uuid.uuid4()), codes=["OK", ""]), metadata=ledger.service
            ),
            "codes[1]",
        ),
        (
            ledger.internal.BulkAssign(
                pb.BulkAssignRequest(book_id=str(uuid.uuid4()), assignments=[pb.UserCodeCount(user_id="x", count=1)]),
                metadata=ledger.service,
            ),
            "assignments[0].user_id",
        ),
    ]
    for call, field in cases:
        error = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert field in error.field_violations, (field, error.field_violations)


async def test_listing_user_and_book_coupons(ledger):
    book_id, codes = await ledger.book(7)
    user, stub = ledger.caller(), ledger.stub
    mine = sorted(codes[:5])
    for code in mine:
        await ledger.assign(code, user)
    await stub.LockCoupon(pb.LockCouponRequest(code=mine[0]), metadata=user.metadata)
    await stub.RedeemCoupon(pb.RedeemCouponRequest(code=mine[1]), metadata=user.metadata)

    seen, token = [], ""
    while True:
        page = await stub.ListUserCoupons(
            pb.ListUserCouponsRequest(user_id="me", page_size=2, page_token=token), metadata=user.metadata
        )
        seen += [c.code for c in page.coupons]
        token = page.next_page_token
        if not token:
            break
    assert seen == mine
    by_state = {}
    for state in (pb.ASSIGNED, pb.LOCKED, pb.REDEEMED):
        page = await stub.ListUserCoupons(
            pb.ListUserCouponsRequest(user_id=user.user_id, state=state, book_id=book_id), metadata=user.metadata
        )
        by_state[state] = [c.code for c in page.coupons]
    assert by_state == {pb.ASSIGNED: mine[2:], pb.LOCKED: [mine[0]], pb.REDEEMED: [mine[1]]}

    admin = ledger.admin.metadata
    everything = await stub.ListBookCoupons(pb.ListBookCouponsRequest(book_id=book_id), metadata=admin)
    assert sorted(c.code for c in everything.coupons) == sorted(codes)
    first = await stub.ListBookCoupons(pb.ListBookCouponsRequest(book_id=book_id, page_size=4), metadata=admin)
    second = await stub.ListBookCoupons(
        pb.ListBookCouponsRequest(book_id=book_id, page_token=first.next_page_token), metadata=admin
    )
    assert [c.code for c in [*first.coupons, *second.coupons]] == [c.code for c in everything.coupons]
    available = await stub.ListBookCoupons(
        pb.ListBookCouponsRequest(book_id=book_id, state=pb.AVAILABLE), metadata=admin
    )
    assert sorted(c.code for c in available.coupons) == sorted(codes[5:])
    await expect_error(
        stub.ListBookCoupons(pb.ListBookCouponsRequest(book_id=str(uuid.uuid4())), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
        "BOOK_NOT_FOUND",
    )


async def test_add_codes_reports_existing_and_counts(ledger):
    book_id, codes = await ledger.book(3)
    other_book, _ = await ledger.book(0)
    stub = ledger.stub
    added = await ledger.internal.AddCodes(
        pb.AddCodesRequest(book_id=other_book, codes=[codes[0], "FRESH-" + codes[1]], request_id="add-1"),
        metadata=ledger.service,
    )
    assert added.inserted == 1 and list(added.existing) == [codes[0]]
    replay = await ledger.internal.AddCodes(
        pb.AddCodesRequest(book_id=other_book, codes=[codes[0], "FRESH-" + codes[1]], request_id="add-1"),
        metadata=ledger.service,
    )
    assert replay == added
    await expect_error(
        ledger.internal.AddCodes(pb.AddCodesRequest(book_id=str(uuid.uuid4()), codes=["Z"]), metadata=ledger.service),
        grpc.StatusCode.NOT_FOUND,
        "BOOK_NOT_FOUND",
    )

    user = ledger.caller()
    await ledger.assign(codes[0], user)
    await stub.LockCoupon(pb.LockCouponRequest(code=codes[0]), metadata=user.metadata)
    await ledger.assign(codes[1], user)
    await stub.RedeemCoupon(pb.RedeemCouponRequest(code=codes[1]), metadata=user.metadata)
    counts = await ledger.internal.GetBookCounts(pb.GetBookCountsRequest(book_id=book_id), metadata=ledger.service)
    assert (counts.total, counts.available, counts.assigned, counts.locked, counts.redeemed, counts.redemptions) == (
        3,
        1,
        0,
        1,
        1,
        1,
    )
    held = await ledger.internal.GetAssignmentCounts(
        pb.GetAssignmentCountsRequest(book_id=book_id, user_ids=[user.user_id, ledger.caller().user_id]),
        metadata=ledger.service,
    )
    assert [c.held for c in held.counts] == [2, 0] and held.available == 1 and held.rules.book_id == book_id


async def test_idempotent_assign_and_redeem(ledger, ledger_db):
    book_id, _ = await ledger.book(5, allow_self_claim=True)
    user, stub = ledger.caller(), ledger.stub
    request = pb.AssignRandomCouponRequest(book_id=book_id, request_id="assign-once")
    first = await stub.AssignRandomCoupon(request, metadata=user.metadata)
    again = await stub.AssignRandomCoupon(request, metadata=user.metadata)
    assert again == first
    mine = await stub.ListUserCoupons(pb.ListUserCouponsRequest(user_id="me"), metadata=user.metadata)
    assert [c.code for c in mine.coupons] == [first.code]
    await expect_error(
        stub.AssignRandomCoupon(
            pb.AssignRandomCouponRequest(book_id=str(uuid.uuid4()), request_id="assign-once"), metadata=user.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )
    # Request ids are scoped by caller: another user's "assign-once" is a request of its own.
    other = ledger.caller()
    theirs = await stub.AssignRandomCoupon(request, metadata=other.metadata)
    assert theirs.code != first.code and theirs.user_id == other.user_id

    redeem = pb.RedeemCouponRequest(code=first.code, request_id="redeem-once")
    redeemed = await stub.RedeemCoupon(redeem, metadata=user.metadata)
    assert await stub.RedeemCoupon(redeem, metadata=user.metadata) == redeemed
    history = await stub.ListCouponHistory(pb.ListCouponHistoryRequest(code=first.code), metadata=ledger.admin.metadata)
    assert [(e.event, e.request_id) for e in history.entries] == [
        (pb.ASSIGNED_EVENT, "assign-once"),
        (pb.REDEEMED_EVENT, "redeem-once"),
    ]
    row = await (
        await ledger_db.execute("SELECT redemption_count FROM redemption.coupons WHERE code = %s", (first.code,))
    ).fetchone()
    assert row == (1,)


async def test_busy_code_is_aborted_but_hidden_from_strangers(ledger, database_url):
    import psycopg

    from services.redemption.repository import advisory_key

    _, code, holder = await ledger.held_coupon()
    stranger = ledger.caller()
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        # Another transaction is working on the code: hold its advisory lock until we roll back.
        await other.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(code),))
        error = await expect_error(
            ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata),
            grpc.StatusCode.ABORTED,
            "CONCURRENT_OPERATION",
        )
        assert error.message == f"Concurrent operation on coupon {code}; retry."
        await expect_error(
            ledger.stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=stranger.metadata),
            grpc.StatusCode.NOT_FOUND,
            "COUPON_NOT_FOUND",
        )
        await other.rollback()
    redeemed = await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
    assert redeemed.coupon.state == pb.REDEEMED


async def test_admin_is_told_the_precise_reason(ledger):
    _, (code,) = await ledger.book(1)
    error = await expect_error(
        ledger.stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=ledger.admin.metadata),
        FAILED,
        "COUPON_NOT_ASSIGNED",
    )
    assert error.message == "Cannot lock an AVAILABLE coupon: it has no holder; assign it first."
    await expect_error(
        ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=ledger.admin.metadata),
        FAILED,
        "COUPON_NOT_ASSIGNED",
    )
