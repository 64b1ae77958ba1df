"""What a front end reads from the ledger's lists: each coupon names its book (books sends the name with the
rules), every list has total_size (counted with its first page and carried by its page tokens), and
refusals name the book the way people know it."""

import uuid

import grpc
from google.protobuf import field_mask_pb2

from coupons.books.v1 import books_pb2
from coupons.redemption.v1 import redemption_pb2 as pb
from kernel import paging
from tests.support import bearer, expect_error
from tests.test_books_crud import create, new_name

FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def _pages(call, request, field: str) -> list:
    """Every page of a list: (items, total_size) per page."""
    pages = []
    while True:
        page = await call(request)
        pages.append((list(getattr(page, field)), page.total_size))
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token


async def test_a_coupon_carries_its_books_name_in_every_answer(books_stub, admin_session, ledger):
    name = new_name("Spring Sale")
    book = await create(books_stub, admin_session, name=name, allow_multi_redemption=True, max_redemptions_per_user=2)
    await books_stub.ImportCodes(
        books_pb2.ImportCodesRequest(book_id=book.id, codes=[f"NAMED{book.id[:8].upper()}"]),
        metadata=bearer(admin_session),
    )
    holder = ledger.caller()
    (code,) = [
        c.code
        for c in (
            await ledger.stub.ListBookCoupons(
                pb.ListBookCouponsRequest(book_id=book.id), metadata=ledger.admin.metadata
            )
        ).coupons
    ]
    assigned = await ledger.assign(code, holder)
    locked = await ledger.stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=holder.metadata)
    unlocked = await ledger.stub.UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=holder.metadata)
    redeemed = await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
    read = await ledger.stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=holder.metadata)
    mine = await ledger.stub.ListUserCoupons(pb.ListUserCouponsRequest(user_id="me"), metadata=holder.metadata)
    answers = [assigned, locked.coupon, unlocked, redeemed.coupon, read, *mine.coupons]
    assert [c.book_name for c in answers] == [name] * 6

    renamed = new_name("Summer Sale")
    await books_stub.UpdateBook(
        books_pb2.UpdateBookRequest(
            book=books_pb2.Book(id=book.id, name=renamed), update_mask=field_mask_pb2.FieldMask(paths=["name"])
        ),
        metadata=bearer(admin_session),
    )
    read = await ledger.stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=holder.metadata)
    assert read.book_name == renamed

    await books_stub.ArchiveBook(books_pb2.ArchiveBookRequest(id=book.id), metadata=bearer(admin_session))
    error = await expect_error(
        ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata), FAILED, "BOOK_ARCHIVED"
    )
    assert error.message == f"Cannot redeem a coupon of book {renamed!r}: the book is archived."


async def test_every_coupon_and_history_list_has_its_total(ledger):
    book_id, codes = await ledger.book(7, book_name="Totals")
    holder = ledger.caller()
    for code in codes[:5]:
        await ledger.assign(code, holder)
    await ledger.stub.LockCoupon(pb.LockCouponRequest(code=codes[0]), metadata=holder.metadata)
    await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=codes[1]), metadata=holder.metadata)
    admin = ledger.admin.metadata

    def book_coupons(state=pb.COUPON_STATE_UNSPECIFIED):
        return _pages(
            lambda r: ledger.stub.ListBookCoupons(r, metadata=admin),
            pb.ListBookCouponsRequest(book_id=book_id, state=state, page_size=2),
            "coupons",
        )

    mine = await _pages(
        lambda r: ledger.stub.ListUserCoupons(r, metadata=holder.metadata),
        pb.ListUserCouponsRequest(user_id="me", page_size=2),
        "coupons",
    )
    assert [total for _, total in mine] == [5, 5, 5] and sum(len(items) for items, _ in mine) == 5
    assert [total for _, total in await book_coupons()] == [7] * 4
    counts = {
        state: (await book_coupons(state))[0][1]
        for state in (pb.AVAILABLE, pb.ASSIGNED, pb.LOCKED, pb.REDEEMED, pb.EXPIRED)
    }
    assert counts == {pb.AVAILABLE: 2, pb.ASSIGNED: 3, pb.LOCKED: 1, pb.REDEEMED: 1, pb.EXPIRED: 0}

    book_history = await _pages(
        lambda r: ledger.stub.ListBookHistory(r, metadata=admin),
        pb.ListBookHistoryRequest(book_id=book_id, page_size=3),
        "entries",
    )
    assert [total for _, total in book_history] == [7, 7, 7]  # 5 assigned, 1 locked, 1 redeemed
    code_history = await ledger.stub.ListCouponHistory(pb.ListCouponHistoryRequest(code=codes[0]), metadata=admin)
    assert (len(code_history.entries), code_history.total_size) == (2, 2)


async def test_a_listings_total_is_counted_with_its_first_page(ledger):
    """Later pages repeat the first page's count (no recount per page of a large book); a new listing counts
    again. A token's total cannot be swapped for another list's cursor either."""
    book_id, codes = await ledger.book(4)
    first = await ledger.stub.ListBookCoupons(
        pb.ListBookCouponsRequest(book_id=book_id, page_size=2), metadata=ledger.admin.metadata
    )
    await ledger.internal.AddCodes(pb.AddCodesRequest(book_id=book_id, codes=[f"{codes[0]}X"]), metadata=ledger.service)
    second = await ledger.stub.ListBookCoupons(
        pb.ListBookCouponsRequest(book_id=book_id, page_size=2, page_token=first.next_page_token),
        metadata=ledger.admin.metadata,
    )
    again = await ledger.stub.ListBookCoupons(
        pb.ListBookCouponsRequest(book_id=book_id), metadata=ledger.admin.metadata
    )
    assert (first.total_size, second.total_size, again.total_size) == (4, 4, 5)
    await expect_error(
        ledger.stub.ListBookHistory(
            pb.ListBookHistoryRequest(book_id=book_id, page_token=first.next_page_token), metadata=ledger.admin.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_a_book_name_the_ledger_cannot_keep_is_refused_naming_the_field(ledger):
    error = await expect_error(
        ledger.internal.PutBookRules(
            pb.PutBookRulesRequest(rules=pb.BookRules(book_id=str(uuid.uuid4()), version=1, book_name="x" * 201)),
            metadata=ledger.service,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert error.field_violations == {"rules.book_name": "at most 200 characters, no control characters"}


async def test_a_page_token_carrying_a_total_no_list_can_have_is_refused(ledger):
    """The total rides in the token; one edited past int32 is the caller's error, not an INTERNAL."""
    book_id, _ = await ledger.book(3)
    first = await ledger.stub.ListBookCoupons(
        pb.ListBookCouponsRequest(book_id=book_id, page_size=1), metadata=ledger.admin.metadata
    )
    cursor = paging.decode_token(first.next_page_token)
    forged = paging.encode_token({**cursor, paging.TOTAL_KEY: 2**40})
    await expect_error(
        ledger.stub.ListBookCoupons(
            pb.ListBookCouponsRequest(book_id=book_id, page_token=forged), metadata=ledger.admin.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
