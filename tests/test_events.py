"""Events: every ledger transition is one event from the transaction that made it (history is the ledger's
outbox), gathered by the events service and streamed in order per subject, resumable by cursor, also
after a restart of the events service."""

import asyncio
import collections
import contextlib
import uuid

import grpc
import pytest

from coupons.events.v1 import events_pb2, events_pb2_grpc
from coupons.redemption.v1 import redemption_pb2 as pb
from services.events.app import build
from tests.support import expect_error, serving

POLL = 0.05


@contextlib.asynccontextmanager
async def events_service(database_url, auth_server, redemption_server, books_server="", pools_server=""):
    sources = {
        "redemption_addr": redemption_server,
        "books_addr": books_server or "127.0.0.1:1",  # a source away is retried, the others go on
        "pools_addr": pools_server or "127.0.0.1:1",
    }
    async with serving(build, "events", database_url, auth_server, **sources, events_poll_seconds=POLL) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            yield events_pb2_grpc.EventServiceStub(channel)


@pytest.fixture
async def events(database_url, auth_server, redemption_server, books_server, pools_server):
    async with events_service(database_url, auth_server, redemption_server, books_server, pools_server) as stub:
        yield stub


async def watch(stub, metadata, count: int, timeout: float = 60.0, **request) -> list[events_pb2.Event]:
    """The first `count` events of a watch, then hangs up."""
    received: list[events_pb2.Event] = []
    call = stub.WatchEvents(events_pb2.WatchEventsRequest(**request), metadata=metadata)
    try:
        async with asyncio.timeout(timeout):
            async for event in call:
                received.append(event)
                if len(received) == count:
                    break
    finally:
        call.cancel()
    return received


async def history_ids(ledger_db, book_id: str) -> list[str]:
    rows = await (
        await ledger_db.execute("SELECT id FROM redemption.history WHERE book_id = %s ORDER BY id", (book_id,))
    ).fetchall()
    return [f"redemption-{row[0]}" for row in rows]


def in_order_per_subject(received: list[events_pb2.Event]) -> bool:
    by_subject = collections.defaultdict(list)
    for event in received:
        by_subject[event.subject_id].append(int(event.id.rsplit("-", 1)[1]))
    return all(numbers == sorted(numbers) for numbers in by_subject.values())


async def test_each_transition_is_one_event_with_who_what_and_when(events, ledger, ledger_db):
    book_id, (code,) = await ledger.book(1, max_redemptions_per_user=2, allow_multi_redemption=True)
    holder = ledger.caller()
    await ledger.assign(code, holder)
    await ledger.stub.LockCoupon(pb.LockCouponRequest(code=code, request_id="lock-1"), metadata=holder.metadata)
    await ledger.stub.UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=holder.metadata)
    await ledger.stub.RedeemCoupon(
        pb.RedeemCouponRequest(code=code, order_reference="order-7"), metadata=holder.metadata
    )

    received = await watch(events, ledger.admin.metadata, 4, from_oldest=True, book_id=book_id)

    assert [e.type for e in received] == ["coupon.assigned", "coupon.locked", "coupon.unlocked", "coupon.redeemed"]
    assert [e.id for e in received] == await history_ids(ledger_db, book_id)
    assert {(e.source, e.subject_type, e.subject_id, e.book_id) for e in received} == {
        ("redemption", "coupon", code, book_id)
    }
    assert received[1].request_id == "lock-1" and received[1].actor == holder.user_id
    assert received[3].data["order_reference"] == "order-7" and received[3].data["user_id"] == holder.user_id
    assert received[0].data_schema == "coupons.events.coupon.v1" and received[0].time.seconds > 0


async def test_a_refused_or_rolled_back_change_writes_no_event(events, ledger, ledger_db):
    book_id, codes = await ledger.book(3)
    users = [ledger.caller() for _ in range(2)]
    # All or nothing: four codes asked of a book with three assigns none, and records nothing.
    await expect_error(
        ledger.internal.BulkAssign(
            pb.BulkAssignRequest(
                book_id=book_id, assignments=[pb.UserCodeCount(user_id=u.user_id, count=2) for u in users]
            ),
            metadata=ledger.service,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await expect_error(
        ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=codes[0]), metadata=users[0].metadata),
        grpc.StatusCode.NOT_FOUND,  # not theirs
    )
    # A transition inside a transaction that rolls back leaves neither history nor event.
    await ledger_db.execute("BEGIN")
    await ledger_db.execute(
        "INSERT INTO redemption.history (code, book_id, event, actor_id) VALUES (%s, %s, 'ASSIGNED_EVENT', 'test')",
        (codes[1], book_id),
    )
    await ledger_db.execute("ROLLBACK")
    await ledger.assign(codes[2], users[1])  # the one change that happened

    received = await watch(events, ledger.admin.metadata, 1, from_oldest=True, book_id=book_id)
    assert [e.subject_id for e in received] == [codes[2]]
    with pytest.raises(TimeoutError):
        await watch(events, ledger.admin.metadata, 1, timeout=1.0, after_cursor=received[0].cursor, book_id=book_id)
    assert len(await history_ids(ledger_db, book_id)) == 1


async def churn(ledger, codes: list[str], holders: dict, rounds: int) -> None:
    """Parallel callers locking and unlocking their own codes: transitions committing out of number order."""

    async def one(code: str) -> None:
        holder = holders[code]
        for _ in range(rounds):
            await ledger.next_stub().LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata)
            await ledger.next_stub().UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=holder.metadata)

    await asyncio.gather(*(one(code) for code in codes))


async def test_ten_thousand_events_in_order_resumed_by_cursor_and_across_a_restart(
    database_url, auth_server, redemption_server, ledger, ledger_db
):
    book_id, codes = await ledger.book(10_000)
    users = [ledger.caller() for _ in range(100)]
    assignments = [pb.UserCodeCount(user_id=u.user_id, count=100) for u in users]
    response = await ledger.internal.BulkAssign(
        pb.BulkAssignRequest(book_id=book_id, assignments=assignments), metadata=ledger.service
    )
    holders = {code: user for user, given in zip(users, response.assignments, strict=True) for code in given.codes}
    busy = [given.codes[0] for given in response.assignments[:40]]
    churning = asyncio.create_task(churn(ledger, busy, holders, rounds=5))  # 400 more events while watching
    expected = 10_000 + 40 * 5 * 2

    async with events_service(database_url, auth_server, redemption_server) as stub:
        first = await watch(stub, ledger.admin.metadata, 4_000, from_oldest=True, book_id=book_id)
        second = await watch(stub, ledger.admin.metadata, 3_000, after_cursor=first[-1].cursor, book_id=book_id)
    await churning
    # The events service stopped and started again: the stream resumes where the cursor says.
    async with events_service(database_url, auth_server, redemption_server) as stub:
        rest = await watch(
            stub, ledger.admin.metadata, expected - 7_000, after_cursor=second[-1].cursor, book_id=book_id
        )
        with pytest.raises(TimeoutError):  # and nothing beyond what happened
            await watch(stub, ledger.admin.metadata, 1, timeout=1.0, after_cursor=rest[-1].cursor, book_id=book_id)

    received = first + second + rest
    assert len({e.id for e in received}) == len(received) == expected  # no loss, no repeat
    assert sorted(e.id for e in received) == sorted(await history_ids(ledger_db, book_id))
    assert in_order_per_subject(received)
    assert collections.Counter(e.type for e in received) == {
        "coupon.assigned": 10_000,
        "coupon.locked": 200,
        "coupon.unlocked": 200,
    }


async def test_only_admins_and_services_watch_and_a_foreign_cursor_names_the_field(events, ledger):
    person = ledger.caller()
    await expect_error(
        watch(events, person.metadata, 1, from_oldest=True), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"
    )
    assert len(await watch(events, ledger.service, 1, from_oldest=True)) == 1  # a service may
    rich = await expect_error(
        watch(events, ledger.admin.metadata, 1, after_cursor="not-a-cursor"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert list(rich.field_violations) == ["after_cursor"]
    rich = await expect_error(
        watch(events, ledger.admin.metadata, 1, types=["coupon.redeemed", "no spaces"]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(rich.field_violations) == ["types[1]"]


async def test_book_changes_are_events_of_the_book_in_their_transaction(events, books_stub, admin_session, ledger):
    from coupons.books.v1 import books_pb2

    metadata = ledger.admin.metadata
    book = await books_stub.CreateBook(
        books_pb2.CreateBookRequest(
            book=books_pb2.Book(name=f"Evented {uuid.uuid4().hex[:8]}", code_pattern="EV-{}", code_length=6)
        ),
        metadata=metadata,
    )
    await books_stub.UploadCodes(
        iter([books_pb2.UploadCodesChunk(book_id=book.id, codes=["EV-AAAAAA", "EV-BBBBBB"])]), metadata=metadata
    )
    await books_stub.ArchiveBook(books_pb2.ArchiveBookRequest(id=book.id), metadata=metadata)

    received = await watch(events, metadata, 3, from_oldest=True, book_id=book.id)
    assert [e.type for e in received] == ["book.created", "book.codes_added", "book.archived"]
    assert {(e.source, e.subject_type, e.subject_id) for e in received} == {("books", "book", book.id)}
    assert received[1].data["added"] == 2 and received[2].data["status"] == "ARCHIVED"
    assert received[0].actor == ledger.admin.user_id


async def test_a_distribution_is_a_pool_event_and_its_assignments_coupon_events(
    events, ledger, ledger_db, new_pool, admin, pools_stub
):
    from coupons.pools.v1 import pools_pb2

    book_id, _ = await ledger.book(6)
    members = [ledger.caller() for _ in range(3)]
    pool = await new_pool([m.user_id for m in members])
    done = await pools_stub.Distribute(
        pools_pb2.DistributeRequest(pool_id=pool.id, book_id=book_id, mode=pools_pb2.EQUAL, codes_per_member=2),
        metadata=admin,
    )

    by_book = await watch(events, admin, 7, from_oldest=True, book_id=book_id)
    pool_events = [e for e in by_book if e.source == "pools"]
    assert [e.type for e in pool_events] == ["pool.distributed"]
    assert pool_events[0].subject_id == pool.id and pool_events[0].data["assigned"] == 6
    assigned = [e for e in by_book if e.type == "coupon.assigned"]
    assert len(assigned) == 6 and {e.data["distribution_id"] for e in assigned} == {done.id}
    outbox = await (
        await ledger_db.execute("SELECT type FROM pools.event_feed WHERE subject_id = %s ORDER BY id", (pool.id,))
    ).fetchall()
    assert [row[0] for row in outbox] == ["pool.created", "pool.members_added", "pool.distributed"]


async def test_two_replicas_gather_every_event_once(database_url, auth_server, redemption_server, ledger, ledger_db):
    book_id, codes = await ledger.book(400)
    holder = ledger.caller()
    async with (
        events_service(database_url, auth_server, redemption_server) as first,
        events_service(database_url, auth_server, redemption_server) as second,
    ):
        await asyncio.gather(*(ledger.assign(code, holder) for code in codes))  # while both read the feed
        from_first = await watch(first, ledger.admin.metadata, 400, from_oldest=True, book_id=book_id)
        from_second = await watch(second, ledger.admin.metadata, 400, from_oldest=True, book_id=book_id)
    assert [e.id for e in from_first] == [e.id for e in from_second]
    assert sorted(e.id for e in from_first) == sorted(await history_ids(ledger_db, book_id))
    stored = await (
        await ledger_db.execute(
            "SELECT count(*), count(DISTINCT source_id) FROM events.events WHERE book_id = %s", (book_id,)
        )
    ).fetchone()
    assert stored == (400, 400)
