"""Distribution of a book's codes to a pool: the plan here, the one ledger transaction in redemption.

The outcome is checked in the redemption schema directly, so the test trusts neither service's report.
"""

import asyncio
import uuid

import grpc

from coupons.pools.v1 import pools_pb2 as pb
from tests.fixtures_redemption import Caller
from tests.support import bearer, expect_error, rich_error


async def held_by_user(ledger_db, book_id: str) -> dict[str, int]:
    rows = await (
        await ledger_db.execute(
            "SELECT user_id::text, count(*) FROM redemption.coupons WHERE book_id = %s AND user_id IS NOT NULL "
            "GROUP BY user_id",
            (book_id,),
        )
    ).fetchall()
    return dict(rows)


async def assert_counters_match_ledger(ledger_db, book_id: str) -> None:
    holdings = dict(
        await (
            await ledger_db.execute(
                "SELECT user_id::text, held FROM redemption.holdings WHERE book_id = %s AND held > 0", (book_id,)
            )
        ).fetchall()
    )
    assert holdings == await held_by_user(ledger_db, book_id)


def equal(pool_id: str, book_id: str, k: int, request_id: str = "") -> pb.DistributeRequest:
    return pb.DistributeRequest(
        pool_id=pool_id, book_id=book_id, mode=pb.EQUAL, codes_per_member=k, request_id=request_id
    )


def random_codes(pool_id: str, book_id: str, n: int) -> pb.DistributeRequest:
    return pb.DistributeRequest(pool_id=pool_id, book_id=book_id, mode=pb.RANDOM, total_codes=n)


async def test_equal_gives_every_member_exactly_k_distinct_codes(
    pools_stub, admin, pool_users, new_pool, ledger, ledger_db
):
    members = [s.user.id for s in pool_users[:5]]
    pool = await new_pool(members)
    book_id, _ = await ledger.book(40)

    distribution = await pools_stub.Distribute(equal(pool.id, book_id, 3), metadata=admin)

    assert distribution.assigned == 15 and distribution.mode == pb.EQUAL
    assert {m.user_id: m.codes for m in distribution.members} == dict.fromkeys(members, 3)
    assert await held_by_user(ledger_db, book_id) == dict.fromkeys(members, 3)
    codes = await (
        await ledger_db.execute(
            "SELECT code, distribution_id FROM redemption.history WHERE book_id = %s AND event = 'ASSIGNED_EVENT'",
            (book_id,),
        )
    ).fetchall()
    assert len(codes) == 15 and len({code for code, _ in codes}) == 15
    assert {d for _, d in codes} == {distribution.id}
    await assert_counters_match_ledger(ledger_db, book_id)


async def test_random_assigns_exactly_n_codes_within_each_members_limit(
    pools_stub, admin, pool_users, new_pool, ledger, ledger_db
):
    members = [s.user.id for s in pool_users[:5]]
    pool = await new_pool(members)
    book_id, codes = await ledger.book(30, max_assignments_per_user=3)
    for code in codes[:3]:  # the first member is already at the limit
        await ledger.assign(code, Caller(members[0], ()))

    distribution = await pools_stub.Distribute(random_codes(pool.id, book_id, 12), metadata=admin)

    assert distribution.assigned == 12
    held = await held_by_user(ledger_db, book_id)
    assert sum(held.values()) == 15 and max(held.values()) <= 3
    assert sum(m.codes for m in distribution.members) == 12
    assert {m.user_id: m.codes for m in distribution.members}[members[0]] == 0
    await assert_counters_match_ledger(ledger_db, book_id)


async def test_too_few_codes_is_refused_with_the_numbers(pools_stub, admin, pool_users, new_pool, ledger, ledger_db):
    pool = await new_pool([s.user.id for s in pool_users[:5]])
    book_id, _ = await ledger.book(10)

    error = await expect_error(
        pools_stub.Distribute(equal(pool.id, book_id, 3), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DISTRIBUTION_SHORTFALL",
    )
    assert "10 available codes" in error.message and "needs 15" in error.message
    assert error.metadata["available"] == "10" and error.metadata["needed"] == "15"
    await expect_error(
        pools_stub.Distribute(random_codes(pool.id, book_id, 11), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DISTRIBUTION_SHORTFALL",
    )
    assert await held_by_user(ledger_db, book_id) == {}


async def test_members_at_their_limit_are_refused_and_nothing_is_assigned(
    pools_stub, admin, pool_users, new_pool, ledger, ledger_db
):
    members = [s.user.id for s in pool_users[:4]]
    pool = await new_pool(members)
    book_id, codes = await ledger.book(40, max_assignments_per_user=2)
    for code in codes[:2]:
        await ledger.assign(code, Caller(members[0], ()))

    error = await expect_error(
        pools_stub.Distribute(equal(pool.id, book_id, 1), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MEMBERS_OVER_LIMIT",
    )
    assert "1 of 4 members" in error.message and members[0] in error.message
    # RANDOM skips full members, but 3 members with room for 2 each cannot take 7 codes.
    error = await expect_error(
        pools_stub.Distribute(random_codes(pool.id, book_id, 7), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MEMBERS_OVER_LIMIT",
    )
    assert "room for 6 more codes" in error.message and "needs 7" in error.message
    assert await held_by_user(ledger_db, book_id) == {members[0]: 2}


async def test_parallel_distributions_never_hand_out_a_code_twice(
    pools_stub, admin, pool_users, new_pool, ledger, ledger_db
):
    members = [s.user.id for s in pool_users[:5]]
    pools = [await new_pool(members) for _ in range(3)]
    book_id, _ = await ledger.book(25)  # room for two of the three distributions of 10 codes

    outcomes = await asyncio.gather(
        *(pools_stub.Distribute(equal(p.id, book_id, 2), metadata=admin) for p in pools), return_exceptions=True
    )

    succeeded = [o for o in outcomes if isinstance(o, pb.Distribution)]
    refused = [o for o in outcomes if not isinstance(o, pb.Distribution)]
    assert 1 <= len(succeeded) <= 2
    for error in refused:
        assert isinstance(error, grpc.aio.AioRpcError), error
        # Refused by the plan (the others already done) or by the ledger, whose reason reaches the caller unchanged.
        assert (error.code(), rich_error(error).reason) in (
            (grpc.StatusCode.FAILED_PRECONDITION, "DISTRIBUTION_SHORTFALL"),
            (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CODES"),
            (grpc.StatusCode.ABORTED, "CONCURRENT_OPERATION"),
        ), error
    rows = await (
        await ledger_db.execute(
            "SELECT code FROM redemption.history WHERE book_id = %s AND event = 'ASSIGNED_EVENT'", (book_id,)
        )
    ).fetchall()
    assert len(rows) == len({code for (code,) in rows}) == 10 * len(succeeded)
    assert await held_by_user(ledger_db, book_id) == dict.fromkeys(members, 2 * len(succeeded))
    await assert_counters_match_ledger(ledger_db, book_id)


async def test_replay_with_the_same_request_id_assigns_nothing_more(
    pools_stub, admin, pool_users, new_pool, ledger, ledger_db
):
    members = [s.user.id for s in pool_users[:3]]
    pool = await new_pool(members)
    book_id, _ = await ledger.book(20)
    request = equal(pool.id, book_id, 2, request_id=uuid.uuid4().hex)

    first = await pools_stub.Distribute(request, metadata=admin)
    replays = await asyncio.gather(*(pools_stub.Distribute(request, metadata=admin) for _ in range(3)))

    assert all(replay == first for replay in replays)
    assert await held_by_user(ledger_db, book_id) == dict.fromkeys(members, 2)
    changed = equal(pool.id, book_id, 3, request_id=request.request_id)
    await expect_error(
        pools_stub.Distribute(changed, metadata=admin), grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED"
    )


async def test_preview_returns_the_plan_and_writes_nothing(pools_stub, admin, pool_users, new_pool, ledger, ledger_db):
    members = [s.user.id for s in pool_users[:4]]
    pool = await new_pool(members)
    book_id, codes = await ledger.book(10, max_assignments_per_user=2)
    await ledger.assign(codes[0], Caller(members[0], ()))
    distributions_before = (await (await ledger_db.execute("SELECT count(*) FROM pools.distributions")).fetchone())[0]

    plan = await pools_stub.PreviewDistribution(equal(pool.id, book_id, 2), metadata=admin)

    assert (plan.member_count, plan.codes_needed, plan.available_codes) == (4, 8, 9)
    assert {m.user_id: (m.codes, m.held) for m in plan.members}[members[0]] == (2, 1)
    assert list(plan.members_over_limit) == [members[0]] and plan.max_assignments_per_user == 2
    assert not plan.satisfiable and "would hold more than" in plan.shortfall
    fits = await pools_stub.PreviewDistribution(random_codes(pool.id, book_id, 7), metadata=admin)
    assert fits.satisfiable and sum(m.codes for m in fits.members) == 7 and not fits.shortfall
    assert await held_by_user(ledger_db, book_id) == {members[0]: 1}
    assert (await (await ledger_db.execute("SELECT count(*) FROM pools.distributions")).fetchone())[
        0
    ] == distributions_before


async def test_distribution_input_is_checked(pools_stub, admin, pool_users, new_pool, ledger):
    pool = await new_pool([pool_users[0].user.id])
    book_id, _ = await ledger.book(5)
    missing_mode = await expect_error(
        pools_stub.Distribute(pb.DistributeRequest(pool_id=pool.id, book_id=book_id), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "mode" in missing_mode.field_violations
    no_count = await expect_error(
        pools_stub.Distribute(equal(pool.id, "not-a-book", 0), metadata=admin), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert {"codes_per_member", "book_id"} <= set(no_count.field_violations)
    no_total = await expect_error(
        pools_stub.PreviewDistribution(random_codes(pool.id, book_id, 0), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "total_codes" in no_total.field_violations
    empty = await new_pool()
    await expect_error(
        pools_stub.Distribute(equal(empty.id, book_id, 1), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
        "POOL_EMPTY",
    )
    await expect_error(
        pools_stub.Distribute(equal(pool.id, str(uuid.uuid4()), 1), metadata=admin), grpc.StatusCode.NOT_FOUND
    )


async def test_a_user_cannot_distribute(pools_stub, pool_users, new_pool, ledger):
    pool = await new_pool([pool_users[0].user.id])
    book_id, _ = await ledger.book(5)
    await expect_error(
        pools_stub.Distribute(equal(pool.id, book_id, 1), metadata=bearer(pool_users[0])),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        pools_stub.PreviewDistribution(equal(pool.id, book_id, 1), metadata=bearer(pool_users[0])),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_equal_by_total_divides_the_codes_over_the_pool_rounding_down(
    pools_stub, admin, pool_users, new_pool, ledger, ledger_db
):
    members = [s.user.id for s in pool_users[:4]]
    pool = await new_pool(members)
    book_id, _ = await ledger.book(40)
    by_total = pb.DistributeRequest(pool_id=pool.id, book_id=book_id, mode=pb.EQUAL, total_codes=11)

    plan = await pools_stub.PreviewDistribution(by_total, metadata=admin)
    assert (plan.codes_needed, {m.codes for m in plan.members}) == (8, {2})  # 11 // 4 = 2 each, 3 left over
    distribution = await pools_stub.Distribute(by_total, metadata=admin)
    assert distribution.assigned == 8
    assert await held_by_user(ledger_db, book_id) == dict.fromkeys(members, 2)

    too_few = pb.DistributeRequest(pool_id=pool.id, book_id=book_id, mode=pb.EQUAL, total_codes=3)
    error = await expect_error(
        pools_stub.Distribute(too_few, metadata=admin), grpc.StatusCode.FAILED_PRECONDITION, "TOTAL_BELOW_POOL_SIZE"
    )
    assert "4 members" in error.message
    both = pb.DistributeRequest(pool_id=pool.id, book_id=book_id, mode=pb.EQUAL, codes_per_member=1, total_codes=8)
    error = await expect_error(pools_stub.Distribute(both, metadata=admin), grpc.StatusCode.INVALID_ARGUMENT)
    assert "total_codes" in error.field_violations


async def test_a_shared_book_is_never_distributed(pools_stub, admin, pool_users, new_pool, ledger):
    pool = await new_pool([pool_users[0].user.id])
    book_id, _ = await ledger.book(5, shared=True, max_redemptions_total=10)
    plan = await pools_stub.PreviewDistribution(equal(pool.id, book_id, 1), metadata=admin)
    assert not plan.satisfiable and "shared codes" in plan.shortfall
    await expect_error(
        pools_stub.Distribute(equal(pool.id, book_id, 1), metadata=admin),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BOOK_SHARED",
    )
