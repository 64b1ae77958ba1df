"""Hostile or odd input: every one is a precise refusal, never INTERNAL, never a bypass."""

import asyncio
import logging
import uuid

import grpc
import pytest

from coupons.auth.v1 import auth_pb2
from coupons.books.v1 import books_pb2
from kernel.errors import Unavailable
from kernel.tokens import SigningKey, TokenIssuer, TokenVerifier
from tests.support import bearer, expect_error


async def test_a_burst_of_parallel_guesses_cannot_outrun_the_login_limit(auth_stub):
    email = f"burst-{uuid.uuid4().hex[:8]}@example.com"
    await auth_stub.Register(auth_pb2.RegisterRequest(email=email, password="correct-horse"))
    attempts = [auth_stub.Login(auth_pb2.LoginRequest(email=email, password=f"guess-{i:04d}")) for i in range(30)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    codes = [r.code() for r in results]
    # At most LOGIN_MAX_FAILURES (5) passwords were checked; everything else was refused before bcrypt.
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) + codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 30
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) <= 4
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=email, password="correct-horse")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LOGIN_RATE_LIMITED",
    )


async def test_a_failed_key_fetch_is_unavailable_and_retried_at_once():
    key = SigningKey.generate()
    calls = []

    async def flaky_loader():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("auth is starting")
        return {key.kid: key.public_key}

    verifier = TokenVerifier(flaky_loader, "coupons-auth", "coupons")
    token = TokenIssuer(key, "coupons-auth", "coupons", 60).issue(str(uuid.uuid4()), "USER")
    with pytest.raises(Unavailable):
        await verifier.verify(token)
    assert (await verifier.verify(token)).role == "USER"


@pytest.mark.parametrize("email", ["nul\x00@example.com", "tab\t@example.com"])
async def test_control_characters_in_an_email(auth_stub, email):
    error = await expect_error(
        auth_stub.Register(auth_pb2.RegisterRequest(email=email, password="long-enough")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "email" in error.field_violations


async def test_a_nul_character_that_reaches_the_database_is_invalid_argument(auth_stub, admin_session):
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email="x\x00@example.com", password="whatever-pw")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_VALUE",
    )
    await expect_error(
        auth_stub.ListUsers(auth_pb2.ListUsersRequest(email_contains="\x00"), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_VALUE",
    )


async def test_unknown_enum_numbers(auth_stub, admin_session, books_stub):
    error = await expect_error(
        auth_stub.CreateUser(
            auth_pb2.CreateUserRequest(email=f"e-{uuid.uuid4().hex[:6]}@example.com", password="long-enough", role=9),
            metadata=bearer(admin_session),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    )
    assert "USER" in error.field_violations["role"]
    await expect_error(
        books_stub.ListBooks(books_pb2.ListBooksRequest(status=42), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ENUM_VALUE",
    )


@pytest.mark.parametrize(
    "odd_id",
    [
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "{12345678-1234-5678-1234-567812345678}",
        "12345678123456781234567812345678",
    ],
)
async def test_non_canonical_ids_are_refused(auth_stub, admin_session, books_stub, odd_id):
    await expect_error(
        auth_stub.GetUser(auth_pb2.GetUserRequest(id=odd_id), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_USER_ID",
    )
    await expect_error(
        books_stub.GetBook(books_pb2.GetBookRequest(id=odd_id), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_BOOK_ID",
    )


async def test_an_admin_cannot_lock_themself_out_with_an_upper_case_id(auth_stub, admin_session):
    await expect_error(
        auth_stub.UpdateUser(
            auth_pb2.UpdateUserRequest(id=admin_session.user.id.upper(), active=False), metadata=bearer(admin_session)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SELF_LOCKOUT",
    )


async def test_a_timestamp_out_of_range(books_stub, admin_session):
    book = books_pb2.Book(name="Far future")
    book.valid_until.seconds = 2**62
    error = await expect_error(
        books_stub.CreateBook(books_pb2.CreateBookRequest(book=book), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_TIMESTAMP",
    )
    assert "valid_until" in error.field_violations


@pytest.mark.parametrize("request_id", ["x" * 129, "has space", "semi;colon"])
async def test_a_malformed_request_id(auth_stub, admin_session, request_id):
    await expect_error(
        auth_stub.CreateUser(
            auth_pb2.CreateUserRequest(
                email=f"r-{uuid.uuid4().hex[:6]}@example.com", password="long-enough", request_id=request_id
            ),
            metadata=bearer(admin_session),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST_ID",
    )


async def test_the_access_log_names_the_caller(auth_stub, admin_session, caplog):
    with caplog.at_level(logging.INFO, logger="kernel.rpc"):
        await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(admin_session))
    fields = [getattr(r, "fields", {}) for r in caplog.records if r.name == "kernel.rpc"]
    assert any(f.get("method", "").endswith("/GetMe") and f.get("user_id") == admin_session.user.id for f in fields)


async def test_codes_are_case_insensitive_and_control_characters_refused(ledger):
    from coupons.redemption.v1 import redemption_pb2 as pb

    _, code, holder = await ledger.held_coupon()
    coupon = await ledger.stub.GetCoupon(pb.GetCouponRequest(code=code.lower()), metadata=holder.metadata)
    assert coupon.code == code
    redeemed = await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code.lower()), metadata=holder.metadata)
    assert redeemed.coupon.state == pb.REDEEMED
    await expect_error(
        ledger.stub.GetCoupon(pb.GetCouponRequest(code="NUL\x00CODE"), metadata=holder.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_CODE",
    )


async def test_the_same_generation_request_twice_at_once_generates_once(books_stub, admin_session):
    admin = bearer(admin_session)
    book = await books_stub.CreateBook(
        books_pb2.CreateBookRequest(
            book=books_pb2.Book(name=f"Lease {uuid.uuid4().hex[:6]}", code_pattern="LEASE-{}", code_length=10)
        ),
        metadata=admin,
    )
    request = books_pb2.GenerateCodesRequest(book_id=book.id, count=120_000, request_id=uuid.uuid4().hex)

    async def run():
        last = None
        async for progress in books_stub.GenerateCodes(request, metadata=admin):
            last = progress
        return last

    results = await asyncio.gather(run(), run(), return_exceptions=True)
    finished = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert finished and finished[0].done and finished[0].generated == 120_000
    assert all(r.code() == grpc.StatusCode.ABORTED for r in refused)
    stored = await books_stub.GetBook(books_pb2.GetBookRequest(id=book.id), metadata=admin)
    assert stored.code_count == 120_000
    replay = await run()  # after the first finished, the same id answers done and adds nothing
    assert (
        replay.done
        and (await books_stub.GetBook(books_pb2.GetBookRequest(id=book.id), metadata=admin)).code_count == 120_000
    )
