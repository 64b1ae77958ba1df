"""Uploading codes, in one request and streamed: per-code answers for everything refused."""

import uuid

import grpc
import psycopg

from coupons.books.v1 import books_pb2
from tests.support import bearer, expect_error
from tests.test_books_crud import create


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12].upper()}"


def stored_codes(database_url: str, book_id: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        return {row[0] for row in conn.execute("SELECT code FROM redemption.coupons WHERE book_id = %s", (book_id,))}


def refused(response) -> list[tuple[int, str, str]]:
    return [(r.index, r.code, r.reason) for r in response.rejected]


async def test_import_reports_each_refused_code(books_stub, admin_session, database_url):
    owner = await create(books_stub, admin_session)
    taken = unique("TAKEN")
    await books_stub.ImportCodes(
        books_pb2.ImportCodesRequest(book_id=owner.id, codes=[taken]), metadata=bearer(admin_session)
    )

    book = await create(books_stub, admin_session)
    good, other = unique("GOOD"), unique("OTHER")
    codes = [f"  {good.lower()} ", "AB", "BAD CODE!", good, taken, other, "X" * 65, ""]
    response = await books_stub.ImportCodes(
        books_pb2.ImportCodesRequest(book_id=book.id, codes=codes), metadata=bearer(admin_session)
    )
    assert (response.received, response.accepted) == (8, 2)
    assert refused(response) == [
        (1, "AB", "INVALID_LENGTH"),
        (2, "BAD CODE!", "INVALID_CHARACTERS"),
        (3, good, "DUPLICATE_IN_UPLOAD"),
        (4, taken, "ALREADY_EXISTS"),
        (6, "X" * 65, "INVALID_LENGTH"),
        (7, "", "INVALID_LENGTH"),
    ]
    assert all(r.message for r in response.rejected)
    # Valid codes are stored even though others were refused; normalized to upper case.
    assert stored_codes(database_url, book.id) == {good, other}
    read = await books_stub.GetBook(books_pb2.GetBookRequest(id=book.id), metadata=bearer(admin_session))
    assert read.code_count == 2


async def test_import_with_request_id_answers_a_retry_alike(books_stub, admin_session):
    book = await create(books_stub, admin_session)
    request = books_pb2.ImportCodesRequest(book_id=book.id, codes=[unique("ONCE"), "NO"], request_id=uuid.uuid4().hex)
    first = await books_stub.ImportCodes(request, metadata=bearer(admin_session))
    again = await books_stub.ImportCodes(request, metadata=bearer(admin_session))
    assert first == again and first.accepted == 1
    request.codes.append(unique("MORE"))
    await expect_error(
        books_stub.ImportCodes(request, metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )


async def test_streamed_upload_reports_across_chunks(books_stub, admin_session, database_url):
    book = await create(books_stub, admin_session)
    first_chunk = [unique("S") for _ in range(1_000)]
    second_chunk = [unique("T") for _ in range(1_000)] + [first_chunk[10].lower(), "ÜBER-1234"]

    async def chunks():
        yield books_pb2.UploadCodesChunk(book_id=book.id, codes=first_chunk)
        yield books_pb2.UploadCodesChunk(codes=second_chunk)

    response = await books_stub.UploadCodes(chunks(), metadata=bearer(admin_session))
    assert (response.received, response.accepted) == (2_002, 2_000)
    assert refused(response) == [
        (2_000, first_chunk[10], "DUPLICATE_IN_UPLOAD"),
        (2_001, "ÜBER-1234", "INVALID_CHARACTERS"),
    ]
    assert stored_codes(database_url, book.id) == set(first_chunk + second_chunk[:1_000])

    async def again():
        yield books_pb2.UploadCodesChunk(book_id=book.id, codes=first_chunk[:3])

    repeated = await books_stub.UploadCodes(again(), metadata=bearer(admin_session))
    assert refused(repeated) == [(i, first_chunk[i], "ALREADY_EXISTS") for i in range(3)]


async def test_streamed_upload_needs_a_book_first(books_stub, admin_session):
    async def chunks():
        yield books_pb2.UploadCodesChunk(codes=["ABCD1234"])

    error = await expect_error(
        books_stub.UploadCodes(chunks(), metadata=bearer(admin_session)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert list(error.field_violations) == ["book_id"]
