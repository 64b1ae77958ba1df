"""Trust boundaries: service identity, revocation of deactivated accounts, referential integrity of
assignments, self-service claims, and the server's answers to malformed or oversized messages."""

import asyncio
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coupons.auth.v1 import auth_pb2
from coupons.pools.v1 import pools_pb2
from coupons.redemption.v1 import redemption_pb2 as pb
from kernel.grpc_clients import ServiceIdentity
from kernel.settings import Settings
from tests.support import REVOCATION_POLL_SECONDS, bearer, expect_error

FAILED, NOT_FOUND, DENIED = (
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
)


async def test_a_service_signs_in_with_its_secret_and_only_with_it(auth_server, auth_internal_stub, ledger):
    secret = Settings.from_env("books").service_secret("books")
    await expect_error(
        auth_internal_stub.IssueServiceToken(auth_pb2.IssueServiceTokenRequest(service="books", secret=secret + "x")),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_SERVICE_CREDENTIALS",
    )
    await expect_error(
        auth_internal_stub.IssueServiceToken(auth_pb2.IssueServiceTokenRequest(service="gateway", secret=secret)),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_SERVICE_CREDENTIALS",
    )
    identity = ServiceIdentity("books", secret, auth_server)
    try:
        book_id = str(uuid.uuid4())
        rules = await ledger.internal.PutBookRules(
            pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=1)), metadata=await identity.metadata()
        )
        assert rules.book_id == book_id
    finally:
        await identity.close()


async def test_history_records_the_person_a_service_acted_for(ledger, ledger_db):
    book_id, _ = await ledger.book(2)
    person, user = ledger.caller(), ledger.caller()
    acting = (*ledger.service, ("x-actor-id", person.user_id))
    await ledger.internal.BulkAssign(
        pb.BulkAssignRequest(book_id=book_id, assignments=[pb.UserCodeCount(user_id=user.user_id, count=1)]),
        metadata=acting,
    )
    # A person's own claim to act for someone else is not believed.
    (coupon,) = (
        await ledger.stub.ListUserCoupons(pb.ListUserCouponsRequest(user_id="me"), metadata=user.metadata)
    ).coupons
    await ledger.stub.LockCoupon(
        pb.LockCouponRequest(code=coupon.code), metadata=(*user.metadata, ("x-actor-id", person.user_id))
    )
    actors = await (
        await ledger_db.execute(
            "SELECT event, actor_id FROM redemption.history WHERE code = %s ORDER BY id", (coupon.code,)
        )
    ).fetchall()
    assert actors == [("ASSIGNED_EVENT", person.user_id), ("LOCKED_EVENT", user.user_id)]


async def test_a_deactivated_users_token_is_refused_by_the_ledger_within_the_bound(auth_stub, admin_session, ledger):
    session = await auth_stub.Register(
        auth_pb2.RegisterRequest(email=f"leaver-{uuid.uuid4().hex[:8]}@example.com", password="leaver-pass-1")
    )
    mine = pb.ListUserCouponsRequest(user_id="me")
    await ledger.stub.ListUserCoupons(mine, metadata=bearer(session))
    await auth_stub.UpdateUser(
        auth_pb2.UpdateUserRequest(id=session.user.id, active=False), metadata=bearer(admin_session)
    )
    deactivated = time.monotonic()
    while True:
        try:
            await ledger.stub.ListUserCoupons(mine, metadata=bearer(session))
        except grpc.aio.AioRpcError as error:
            assert error.code() == DENIED and "deactivated" in error.details()
            break
        assert time.monotonic() - deactivated < REVOCATION_POLL_SECONDS + 2, "still accepted after the bound"
        await asyncio.sleep(0.1)
    # Reactivated, the account signs in afresh; the tokens from before stay revoked.
    await auth_stub.UpdateUser(
        auth_pb2.UpdateUserRequest(id=session.user.id, active=True), metadata=bearer(admin_session)
    )
    await asyncio.sleep(REVOCATION_POLL_SECONDS + 0.5)
    await expect_error(
        ledger.stub.ListUserCoupons(mine, metadata=bearer(session)), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"
    )


async def test_assignment_to_a_missing_or_deactivated_account_is_refused(ledger, ledger_db):
    book_id, codes = await ledger.book(4)
    missing, disabled = ledger.stranger(), ledger.caller(active=False)
    admin, stub = ledger.admin.metadata, ledger.stub
    for user, code, reason in ((missing, NOT_FOUND, "USER_NOT_FOUND"), (disabled, FAILED, "USER_DISABLED")):
        await expect_error(
            stub.AssignCoupon(pb.AssignCouponRequest(code=codes[0], user_id=user.user_id), metadata=admin), code, reason
        )
        await expect_error(
            stub.AssignRandomCoupon(
                pb.AssignRandomCouponRequest(book_id=book_id, user_id=user.user_id), metadata=admin
            ),
            code,
            reason,
        )
        await expect_error(
            ledger.internal.BulkAssign(
                pb.BulkAssignRequest(
                    book_id=book_id,
                    assignments=[
                        pb.UserCodeCount(user_id=ledger.caller().user_id, count=1),
                        pb.UserCodeCount(user_id=user.user_id, count=1),
                    ],
                ),
                metadata=ledger.service,
            ),
            code,
            reason,
        )
    assigned = await (
        await ledger_db.execute(
            "SELECT count(*) FROM redemption.coupons WHERE book_id = %s AND state <> 'AVAILABLE'", (book_id,)
        )
    ).fetchone()
    assert assigned == (0,)


async def test_distribution_to_a_pool_with_a_deactivated_member_is_refused(
    pools_stub, admin, auth_stub, admin_session, new_pool, ledger, ledger_db
):
    sessions = [
        await auth_stub.Register(
            auth_pb2.RegisterRequest(email=f"member-{uuid.uuid4().hex[:8]}@example.com", password="member-pass-1")
        )
        for _ in range(2)
    ]
    pool = await new_pool([s.user.id for s in sessions])
    await auth_stub.UpdateUser(
        auth_pb2.UpdateUserRequest(id=sessions[1].user.id, active=False), metadata=bearer(admin_session)
    )
    book_id, _ = await ledger.book(10)
    await expect_error(
        pools_stub.Distribute(
            pools_pb2.DistributeRequest(pool_id=pool.id, book_id=book_id, mode=pools_pb2.EQUAL, codes_per_member=1),
            metadata=admin,
        ),
        FAILED,
        "USER_DISABLED",
    )
    assigned = await (
        await ledger_db.execute(
            "SELECT count(*) FROM redemption.coupons WHERE book_id = %s AND state <> 'AVAILABLE'", (book_id,)
        )
    ).fetchone()
    assert assigned == (0,)


async def test_self_claims_follow_the_books_rule(ledger):
    closed, _ = await ledger.book(3)
    claimable, _ = await ledger.book(3, allow_self_claim=True, max_assignments_per_user=1)
    user, stub = ledger.caller(), ledger.stub
    error = await expect_error(
        stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id=closed), metadata=user.metadata),
        DENIED,
        "SELF_CLAIM_NOT_ALLOWED",
    )
    assert "allow_self_claim" in error.message
    claimed = await stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id=claimable), metadata=user.metadata)
    assert claimed.user_id == user.user_id
    await expect_error(
        stub.AssignRandomCoupon(pb.AssignRandomCouponRequest(book_id=claimable), metadata=user.metadata),
        FAILED,
        "ASSIGNMENT_LIMIT_REACHED",
    )
    # An admin still hands out codes of a book that is closed to claims.
    other = ledger.caller()
    given = await stub.AssignRandomCoupon(
        pb.AssignRandomCouponRequest(book_id=closed, user_id=other.user_id), metadata=ledger.admin.metadata
    )
    assert given.user_id == other.user_id


async def test_malformed_and_oversized_messages_are_refused_before_any_work(redemption_server, ledger):
    async with grpc.aio.insecure_channel(redemption_server) as channel:
        raw = channel.unary_unary("/coupons.redemption.v1.RedemptionService/GetCoupon")
        try:
            await raw(b"\x0a\xff\xff\xff\xff\x0f", metadata=ledger.caller().metadata)  # a length past the end
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "protobuf" in error.details() and "Traceback" not in error.details()
        else:
            raise AssertionError("a malformed message was accepted")
        # Without a token a malformed message is not even parsed: the refusal is about the token.
        await expect_error(raw(b"\x0a\xff\xff\xff\xff\x0f"), grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN")
        big = pb.GetCouponRequest(code="X" * (5 * 1024 * 1024)).SerializeToString()
        await expect_error(raw(big, metadata=ledger.caller().metadata), grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_health_list_answers(redemption_server):
    async with grpc.aio.insecure_channel(redemption_server) as channel:
        listed = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())
    assert listed.statuses["coupons.redemption.v1.RedemptionService"].status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_listen_on_the_configured_host_only(running_suite):
    """HOST is 127.0.0.1 in the suite: no metrics socket may listen on every interface."""
    port = running_suite.ports["redemption"] + 1000
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                listening.add(address)
    assert listening == {"0100007F"}, listening  # 127.0.0.1, little-endian


async def test_the_transaction_helper_maps_database_refusals(database_url):
    """Deadlocks and serialization failures are ABORTED (retry), values PostgreSQL refuses INVALID_ARGUMENT."""
    import dataclasses

    import pytest
    import sqlalchemy as sa

    from kernel import db
    from kernel.errors import Aborted, InvalidArgument

    engine = db.create_engine(dataclasses.replace(Settings.from_env("books"), database_url=database_url))
    try:
        for sqlstate, expected in (("40P01", Aborted), ("40001", Aborted)):
            with pytest.raises(expected):
                async with db.transaction(engine) as conn:
                    await conn.execute(sa.text(f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{sqlstate}'; END $$"))
        with pytest.raises(InvalidArgument):
            async with db.transaction(engine) as conn:
                await conn.execute(sa.text("SELECT CAST(:n AS int)"), {"n": "not a number"})
    finally:
        await engine.dispose()
