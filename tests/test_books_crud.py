"""Books over a real gRPC channel and PostgreSQL: create, read, list, update, archive, and the rules push."""

import uuid

import grpc
import psycopg
from google.protobuf import field_mask_pb2, timestamp_pb2

from coupons.books.v1 import books_pb2
from services.books import codes
from tests.support import bearer, expect_error, serving


def new_name(label: str = "Book") -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


async def create(books_stub, admin_session, **fields) -> books_pb2.Book:
    fields.setdefault("name", new_name())
    return await books_stub.CreateBook(
        books_pb2.CreateBookRequest(book=books_pb2.Book(**fields)), metadata=bearer(admin_session)
    )


def ledger_rules(database_url: str, book_id: str):
    """The rules the redemption service holds for a book, read from its schema."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT version, archived, max_redemptions, lock_ttl_seconds FROM redemption.book_rules WHERE book_id = %s",
            (book_id,),
        ).fetchone()


async def test_create_applies_defaults_and_reads_back(books_stub, admin_session, books_user_session):
    book = await create(books_stub, admin_session, code_pattern="SUMMER-{}-2026", description="Summer sale")
    assert book.id and book.status == books_pb2.ACTIVE and book.code_count == 0
    assert (book.code_length, book.code_alphabet, book.lock_ttl_seconds) == (8, codes.DEFAULT_ALPHABET, 300)
    assert (book.max_redemptions_per_user, book.max_assignments_per_user) == (1, 0)
    # Any signed-in user may read books.
    read = await books_stub.GetBook(books_pb2.GetBookRequest(id=book.id), metadata=bearer(books_user_session))
    assert read == book


async def test_multi_redemption_default(books_stub, admin_session):
    book = await create(books_stub, admin_session, allow_multi_redemption=True)
    assert book.max_redemptions_per_user == 2


async def test_each_invalid_field_is_a_field_violation(books_stub, admin_session):
    cases = [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"code_pattern": "NO-RANDOM-PART"}, "code_pattern"),
        ({"code_pattern": "A{}B{}"}, "code_pattern"),
        ({"code_pattern": "sale-{}"}, "code_pattern"),
        ({"code_length": 3}, "code_length"),
        ({"code_length": 33}, "code_length"),
        ({"code_alphabet": "A"}, "code_alphabet"),
        ({"code_alphabet": "ABCA"}, "code_alphabet"),
        ({"lock_ttl_seconds": 3601}, "lock_ttl_seconds"),
        ({"max_redemptions_per_user": 2}, "max_redemptions_per_user"),
        ({"max_assignments_per_user": -1}, "max_assignments_per_user"),
        ({"valid_from": timestamp(2_000_000), "valid_until": timestamp(1_000_000)}, "valid_until"),
    ]
    for fields, field in cases:
        fields = {"name": new_name(), **fields}
        error = await expect_error(
            create(books_stub, admin_session, **fields), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BOOK"
        )
        assert list(error.field_violations) == [field], (fields, error.field_violations)


async def test_users_cannot_change_books(books_stub, admin_session, books_user_session):
    book = await create(books_stub, admin_session)
    user = bearer(books_user_session)
    calls = [
        books_stub.CreateBook(books_pb2.CreateBookRequest(book=books_pb2.Book(name=new_name())), metadata=user),
        books_stub.UpdateBook(books_pb2.UpdateBookRequest(book=books_pb2.Book(id=book.id, name="x")), metadata=user),
        books_stub.ArchiveBook(books_pb2.ArchiveBookRequest(id=book.id), metadata=user),
        books_stub.ImportCodes(books_pb2.ImportCodesRequest(book_id=book.id, codes=["ABCD1234"]), metadata=user),
        books_stub.GetBookStats(books_pb2.GetBookStatsRequest(id=book.id), metadata=user),
    ]
    for call in calls:
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    progress = books_stub.GenerateCodes(books_pb2.GenerateCodesRequest(book_id=book.id, count=1), metadata=user)
    await expect_error(progress.read(), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    await expect_error(books_stub.GetBook(books_pb2.GetBookRequest(id=book.id)), grpc.StatusCode.UNAUTHENTICATED)


async def test_get_unknown_and_malformed_ids(books_stub, admin_session):
    await expect_error(
        books_stub.GetBook(books_pb2.GetBookRequest(id=str(uuid.uuid4())), metadata=bearer(admin_session)),
        grpc.StatusCode.NOT_FOUND,
        "BOOK_NOT_FOUND",
    )
    await expect_error(
        books_stub.GetBook(books_pb2.GetBookRequest(id="nope"), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_BOOK_ID",
    )


async def test_list_filters_and_pages_newest_first(books_stub, admin_session, books_user_session):
    tag = uuid.uuid4().hex[:8]
    made = [await create(books_stub, admin_session, name=f"Paged {tag} {i}") for i in range(5)]
    await books_stub.ArchiveBook(books_pb2.ArchiveBookRequest(id=made[0].id), metadata=bearer(admin_session))
    seen, token = [], ""
    while True:
        page = await books_stub.ListBooks(
            books_pb2.ListBooksRequest(page_size=2, page_token=token, name_contains=f"paged {tag.upper()}"),
            metadata=bearer(books_user_session),
        )
        assert page.total_size == 5
        seen += [b.id for b in page.books]
        token = page.next_page_token
        if not token:
            break
    assert seen == [b.id for b in reversed(made)]
    active = await books_stub.ListBooks(
        books_pb2.ListBooksRequest(name_contains=tag, status=books_pb2.ACTIVE), metadata=bearer(admin_session)
    )
    assert [b.id for b in active.books] == [b.id for b in reversed(made[1:])]
    await expect_error(
        books_stub.ListBooks(books_pb2.ListBooksRequest(page_token="garbage"), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_update_with_mask_pushes_new_rules(books_stub, admin_session, database_url):
    book = await create(books_stub, admin_session, description="keep me")
    first = ledger_rules(database_url, book.id)
    update = books_pb2.UpdateBookRequest(
        book=books_pb2.Book(
            id=book.id,
            name="Renamed",
            description="",
            allow_multi_redemption=True,
            max_redemptions_per_user=3,
            lock_ttl_seconds=60,
        ),
        update_mask=field_mask_pb2.FieldMask(
            paths=["name", "allow_multi_redemption", "max_redemptions_per_user", "lock_ttl_seconds"]
        ),
    )
    updated = await books_stub.UpdateBook(update, metadata=bearer(admin_session))
    assert (updated.name, updated.description, updated.max_redemptions_per_user, updated.lock_ttl_seconds) == (
        "Renamed",
        "keep me",
        3,
        60,
    )
    version, archived, max_redemptions, lock_ttl = ledger_rules(database_url, book.id)
    assert version > first[0] and not archived and (max_redemptions, lock_ttl) == (3, 60)

    # Without a mask, the fields the request sets.
    updated = await books_stub.UpdateBook(
        books_pb2.UpdateBookRequest(book=books_pb2.Book(id=book.id, description="changed")),
        metadata=bearer(admin_session),
    )
    assert (updated.name, updated.description) == ("Renamed", "changed")

    bad_mask = books_pb2.UpdateBookRequest(
        book=books_pb2.Book(id=book.id), update_mask=field_mask_pb2.FieldMask(paths=["status", "colour"])
    )
    error = await expect_error(
        books_stub.UpdateBook(bad_mask, metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_UPDATE_MASK",
    )
    assert "output only" in error.message and "colour" in error.message

    invalid = books_pb2.UpdateBookRequest(
        book=books_pb2.Book(id=book.id, max_redemptions_per_user=5),
        update_mask=field_mask_pb2.FieldMask(paths=["allow_multi_redemption", "max_redemptions_per_user"]),
    )
    error = await expect_error(
        books_stub.UpdateBook(invalid, metadata=bearer(admin_session)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BOOK"
    )
    assert list(error.field_violations) == ["max_redemptions_per_user"]


async def test_archived_book_refuses_changes(books_stub, admin_session, database_url):
    book = await create(books_stub, admin_session)
    archived = await books_stub.ArchiveBook(books_pb2.ArchiveBookRequest(id=book.id), metadata=bearer(admin_session))
    assert archived.status == books_pb2.ARCHIVED
    assert ledger_rules(database_url, book.id)[1] is True
    await expect_error(
        books_stub.UpdateBook(
            books_pb2.UpdateBookRequest(book=books_pb2.Book(id=book.id, name="x")), metadata=bearer(admin_session)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BOOK_ARCHIVED",
    )
    await expect_error(
        books_stub.ImportCodes(
            books_pb2.ImportCodesRequest(book_id=book.id, codes=["ABCD1234"]), metadata=bearer(admin_session)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BOOK_ARCHIVED",
    )


async def test_create_with_request_id_is_idempotent(books_stub, admin_session):
    request = books_pb2.CreateBookRequest(book=books_pb2.Book(name=new_name("Idempotent")), request_id=uuid.uuid4().hex)
    first = await books_stub.CreateBook(request, metadata=bearer(admin_session))
    again = await books_stub.CreateBook(request, metadata=bearer(admin_session))
    assert again == first
    request.book.name = new_name("Other")
    await expect_error(
        books_stub.CreateBook(request, metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )


async def test_unreachable_ledger_leaves_nothing_half_applied(books_stub, admin_session, database_url, auth_server):
    from kernel.localdb import free_port
    from services.books.app import build

    async with serving(
        build, "books", database_url, auth_server, redemption_addr=f"127.0.0.1:{free_port()}"
    ) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            from coupons.books.v1 import books_pb2_grpc

            cut_off = books_pb2_grpc.BookServiceStub(channel)
            name = new_name("Unpushed")
            error = await expect_error(
                cut_off.CreateBook(
                    books_pb2.CreateBookRequest(book=books_pb2.Book(name=name)), metadata=bearer(admin_session)
                ),
                grpc.StatusCode.UNAVAILABLE,
                "LEDGER_UNAVAILABLE",
            )
            assert "redemption service" in error.message
    listed = await books_stub.ListBooks(books_pb2.ListBooksRequest(name_contains=name), metadata=bearer(admin_session))
    assert listed.total_size == 0
    async with await psycopg.AsyncConnection.connect(database_url) as conn:  # nor its event (docs/events.md)
        cursor = await conn.execute("SELECT count(*) FROM books.event_feed WHERE data->>'name' = %s", (name,))
        assert (await cursor.fetchone()) == (0,)


async def test_a_shared_book_states_its_cap_and_keeps_its_kind(books_stub, admin_session, database_url):
    await expect_error(create(books_stub, admin_session, shared=True), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BOOK")
    await expect_error(
        create(books_stub, admin_session, max_redemptions_total=5), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BOOK"
    )
    book = await create(books_stub, admin_session, shared=True, max_redemptions_total=100)
    assert (book.shared, book.max_redemptions_total, book.max_redemptions_per_user) == (True, 100, 1)
    with psycopg.connect(database_url) as conn:
        pushed = conn.execute(
            "SELECT shared, max_redemptions_total FROM redemption.book_rules WHERE book_id = %s", (book.id,)
        ).fetchone()
    assert pushed == (True, 100)
    await expect_error(
        books_stub.UpdateBook(
            books_pb2.UpdateBookRequest(
                book=books_pb2.Book(id=book.id, shared=False, max_redemptions_total=0),
                update_mask=field_mask_pb2.FieldMask(paths=["shared", "max_redemptions_total"]),
            ),
            metadata=bearer(admin_session),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BOOK_KIND_FIXED",
    )
    raised = await books_stub.UpdateBook(
        books_pb2.UpdateBookRequest(
            book=books_pb2.Book(id=book.id, max_redemptions_total=200),
            update_mask=field_mask_pb2.FieldMask(paths=["max_redemptions_total"]),
        ),
        metadata=bearer(admin_session),
    )
    assert raised.max_redemptions_total == 200
