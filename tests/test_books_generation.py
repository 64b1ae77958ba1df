"""Code generation end to end: books streams progress, the codes land in the redemption ledger."""

import re
import uuid

import grpc
import psycopg

from coupons.books.v1 import books_pb2
from tests.support import bearer, expect_error
from tests.test_books_crud import create


def ledger_codes(database_url: str, book_id: str) -> tuple[int, int, list[str]]:
    """(count, distinct count, a sample) of the book's codes in the redemption schema."""
    with psycopg.connect(database_url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT code) FROM redemption.coupons WHERE book_id = %s", (book_id,)
        ).fetchone()
        sample = [
            row[0]
            for row in conn.execute("SELECT code FROM redemption.coupons WHERE book_id = %s LIMIT 1000", (book_id,))
        ]
    return total, distinct, sample


async def generate(books_stub, admin_session, book_id: str, count: int, request_id: str = ""):
    call = books_stub.GenerateCodes(
        books_pb2.GenerateCodesRequest(book_id=book_id, count=count, request_id=request_id),
        metadata=bearer(admin_session),
    )
    return [progress async for progress in call]


async def test_generate_100k_unique_codes_with_progress(books_stub, admin_session, database_url):
    book = await create(books_stub, admin_session, code_pattern="GEN-{}-26", code_length=8)
    progress = await generate(books_stub, admin_session, book.id, 100_000)
    assert [p.generated for p in progress] == [50_000, 100_000]
    assert [p.done for p in progress] == [False, True]
    assert all(p.requested == 100_000 and p.code_space == 31.0**8 for p in progress)

    total, distinct, sample = ledger_codes(database_url, book.id)
    assert total == distinct == 100_000
    shape = re.compile(r"^GEN-[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{8}-26$")
    assert all(shape.match(code) for code in sample)

    read = await books_stub.GetBook(books_pb2.GetBookRequest(id=book.id), metadata=bearer(admin_session))
    assert read.code_count == 100_000
    stats = await books_stub.GetBookStats(books_pb2.GetBookStatsRequest(id=book.id), metadata=bearer(admin_session))
    assert (stats.book_id, stats.total, stats.available, stats.assigned, stats.redeemed) == (
        book.id,
        100_000,
        100_000,
        0,
        0,
    )


async def test_over_capacity_request_is_refused_with_the_numbers(books_stub, admin_session, database_url):
    # 2^10 = 1,024 possible codes: 256 fit in a quarter.
    book = await create(
        books_stub,
        admin_session,
        code_pattern=f"T{uuid.uuid4().hex[:6].upper()}-{{}}",
        code_length=10,
        code_alphabet="XY",
    )
    progress = await generate(books_stub, admin_session, book.id, 200)
    assert progress[-1].generated == 200 and progress[-1].done
    error = await expect_error(
        generate(books_stub, admin_session, book.id, 100), grpc.StatusCode.FAILED_PRECONDITION, "CODE_SPACE_TOO_SMALL"
    )
    assert "2^10 = 1,024 possible codes, 200 already used; 100 more would fill 29%" in error.message
    assert "at most 25%" in error.message
    assert (error.metadata["code_space"], error.metadata["used"], error.metadata["requested"]) == ("1024", "200", "100")
    assert ledger_codes(database_url, book.id)[:2] == (200, 200)


async def test_small_space_fills_without_duplicates(books_stub, admin_session, database_url):
    book = await create(
        books_stub,
        admin_session,
        code_pattern=f"S{uuid.uuid4().hex[:6].upper()}{{}}",
        code_length=8,
        code_alphabet="AB",
    )
    # 64 of 256 codes: later draws collide with earlier batches' codes and are replaced.
    for _ in range(4):
        await generate(books_stub, admin_session, book.id, 16)
    assert ledger_codes(database_url, book.id)[:2] == (64, 64)


async def test_generation_with_request_id_runs_once(books_stub, admin_session, database_url):
    book = await create(books_stub, admin_session)
    request_id = uuid.uuid4().hex
    first = await generate(books_stub, admin_session, book.id, 1_000, request_id)
    again = await generate(books_stub, admin_session, book.id, 1_000, request_id)
    assert first[-1].generated == again[-1].generated == 1_000 and again[-1].done
    assert ledger_codes(database_url, book.id)[0] == 1_000
    await expect_error(
        generate(books_stub, admin_session, book.id, 5, request_id),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )


async def test_generation_arguments_are_checked(books_stub, admin_session):
    book = await create(books_stub, admin_session)
    for count in (0, -1, 5_000_001):
        error = await expect_error(
            generate(books_stub, admin_session, book.id, count), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COUNT"
        )
        assert list(error.field_violations) == ["count"]
    await expect_error(
        generate(books_stub, admin_session, str(uuid.uuid4()), 1), grpc.StatusCode.NOT_FOUND, "BOOK_NOT_FOUND"
    )


async def test_code_shape_is_fixed_once_a_book_has_codes(books_stub, admin_session):
    book = await create(books_stub, admin_session)
    await generate(books_stub, admin_session, book.id, 10)
    change = books_pb2.UpdateBookRequest(book=books_pb2.Book(id=book.id, code_length=12))
    await expect_error(
        books_stub.UpdateBook(change, metadata=bearer(admin_session)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BOOK_HAS_CODES",
    )
