"""Bulk paths: BulkAssign (all or nothing, idempotent) and AddCodes at the size books sends."""

import asyncio
import time
import uuid

import grpc

from coupons.redemption.v1 import redemption_pb2 as pb
from tests.support import expect_error
from tests.test_redemption_concurrency import assert_ledger_consistent

FAILED = grpc.StatusCode.FAILED_PRECONDITION


def _bulk(book_id: str, counts: dict[str, int], request_id: str = "", distribution_id: str = ""):
    return pb.BulkAssignRequest(
        book_id=book_id,
        request_id=request_id,
        distribution_id=distribution_id,
        assignments=[pb.UserCodeCount(user_id=u, count=n) for u, n in counts.items()],
    )


async def test_bulk_assign_refuses_a_shortfall_and_assigns_nothing(ledger):
    book_id, _ = await ledger.book(40)
    users = [ledger.caller().user_id for _ in range(3)]
    error = await expect_error(
        ledger.internal.BulkAssign(_bulk(book_id, dict.fromkeys(users, 20)), metadata=ledger.service),
        FAILED,
        "INSUFFICIENT_CODES",
    )
    assert "has 40 available codes, the distribution needs 60" in error.message
    assert (error.metadata["available"], error.metadata["needed"]) == ("40", "60")
    counts = await ledger.internal.GetBookCounts(pb.GetBookCountsRequest(book_id=book_id), metadata=ledger.service)
    assert counts.available == 40


async def test_bulk_assign_respects_the_limit_all_or_nothing(ledger, ledger_db):
    book_id, codes = await ledger.book(20, max_assignments_per_user=2)
    full, fresh = ledger.caller(), ledger.caller()
    await ledger.assign(codes[0], full)
    error = await expect_error(
        ledger.internal.BulkAssign(_bulk(book_id, {fresh.user_id: 2, full.user_id: 2}), metadata=ledger.service),
        FAILED,
        "ASSIGNMENT_LIMIT_REACHED",
    )
    assert f"user {full.user_id} holds 1 of at most 2 codes of this book" in error.message
    held = await ledger.internal.GetAssignmentCounts(
        pb.GetAssignmentCountsRequest(book_id=book_id, user_ids=[fresh.user_id, full.user_id]), metadata=ledger.service
    )
    assert [c.held for c in held.counts] == [0, 1] and held.available == 19
    await assert_ledger_consistent(ledger, ledger_db, book_id)


async def test_bulk_assign_is_one_idempotent_distribution(ledger, ledger_db):
    book_id, codes = await ledger.book(30, max_assignments_per_user=5)
    counts = {ledger.caller().user_id: n for n in (5, 3, 1)}
    distribution_id = str(uuid.uuid4())
    request = _bulk(book_id, counts, request_id="bulk-1", distribution_id=distribution_id)
    first = await ledger.internal.BulkAssign(request, metadata=ledger.service)
    assert first.assigned == 9
    assert {a.user_id: len(a.codes) for a in first.assignments} == counts
    handed = [code for a in first.assignments for code in a.codes]
    assert len(set(handed)) == 9 and set(handed) <= set(codes)

    assert await ledger.internal.BulkAssign(request, metadata=ledger.service) == first
    await expect_error(
        ledger.internal.BulkAssign(_bulk(book_id, counts, request_id="bulk-1"), metadata=ledger.service),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )
    rows = await (
        await ledger_db.execute(
            "SELECT code, user_id::text, distribution_id FROM redemption.history WHERE book_id = %s", (book_id,)
        )
    ).fetchall()
    assert sorted(rows) == sorted((code, a.user_id, distribution_id) for a in first.assignments for code in a.codes)
    await assert_ledger_consistent(ledger, ledger_db, book_id)


async def test_add_codes_takes_a_50k_batch_quickly(ledger, ledger_db):
    book_id, _ = await ledger.book(0)
    batch = [f"B-{uuid.uuid4().hex[:20].upper()}" for _ in range(50_000)]
    started = time.perf_counter()
    added = await ledger.internal.AddCodes(pb.AddCodesRequest(book_id=book_id, codes=batch), metadata=ledger.service)
    elapsed = time.perf_counter() - started
    assert added.inserted == 50_000 and not added.existing
    assert elapsed < 10, f"50k codes took {elapsed:.1f}s"
    again = await ledger.internal.AddCodes(
        pb.AddCodesRequest(book_id=book_id, codes=batch[:10] + ["NEW-ONE"]), metadata=ledger.service
    )
    assert again.inserted == 1 and list(again.existing) == batch[:10]
    await assert_ledger_consistent(ledger, ledger_db, book_id)


async def test_parallel_bulk_assigns_over_the_same_users(ledger, ledger_db):
    book_id, _ = await ledger.book(200)
    users = [ledger.caller().user_id for _ in range(10)]

    async def distribute(turn: int):
        order = users[turn % 10 :] + users[: turn % 10]  # each call names the users in another order
        return await ledger.internal.BulkAssign(_bulk(book_id, dict.fromkeys(order, 2)), metadata=ledger.service)

    results = await asyncio.gather(*(distribute(turn) for turn in range(8)))
    handed = [code for result in results for a in result.assignments for code in a.codes]
    assert len(handed) == 160 and len(set(handed)) == 160
    await assert_ledger_consistent(ledger, ledger_db, book_id)
