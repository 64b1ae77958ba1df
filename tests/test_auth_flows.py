"""Auth flows over a real gRPC channel against real PostgreSQL."""

import hashlib
import uuid

import grpc
import psycopg
import pytest

from coupons.auth.v1 import auth_pb2
from tests.support import bearer, expect_error


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@Example.com"


async def register(auth_stub, email=None, password="correct-horse", name="Test User"):
    return await auth_stub.Register(auth_pb2.RegisterRequest(email=email or new_email(), password=password, name=name))


async def test_register_login_me(auth_stub):
    email = new_email()
    session = await register(auth_stub, email)
    assert session.token_type == "bearer" and session.access_token and session.refresh_token
    assert session.user.email == email and session.user.role == auth_pb2.USER and session.user.active

    login = await auth_stub.Login(auth_pb2.LoginRequest(email=email.upper(), password="correct-horse"))
    assert login.user.id == session.user.id

    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(login))
    assert me.id == session.user.id and me.name == "Test User"


async def test_me_needs_a_token(auth_stub):
    await expect_error(auth_stub.GetMe(auth_pb2.GetMeRequest()), grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN")


async def test_refresh_rotates_and_refuses_reuse(auth_stub, database_url):
    session = await register(auth_stub)
    rotated = await auth_stub.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=session.refresh_token))
    assert rotated.refresh_token != session.refresh_token
    assert rotated.user.id == session.user.id

    # The spent token comes back after the double-submit grace (tests/test_auth_refresh_grace.py): refused,
    # and the whole family is revoked, the fresh token too.
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE auth.refresh_tokens SET used_at = used_at - interval '1 hour' WHERE token_hash = %s",
            (hashlib.sha256(session.refresh_token.encode()).digest(),),
        )
    await expect_error(
        auth_stub.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=session.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
    await expect_error(
        auth_stub.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=rotated.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
    await expect_error(
        auth_stub.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token="not-a-token")),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_REFRESH_TOKEN",
    )


async def test_change_password(auth_stub):
    email = new_email()
    session = await register(auth_stub, email)
    await expect_error(
        auth_stub.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="wrong-password", new_password="new-password-1"),
            metadata=bearer(session),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "WRONG_PASSWORD",
    )
    await auth_stub.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password="correct-horse", new_password="new-password-1"),
        metadata=bearer(session),
    )
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=email, password="correct-horse")),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    await auth_stub.Login(auth_pb2.LoginRequest(email=email, password="new-password-1"))
    # A password change ends the sessions made with the old one.
    await expect_error(
        auth_stub.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=session.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )


async def test_unknown_email_and_wrong_password_answer_alike(auth_stub):
    email = new_email()
    await register(auth_stub, email)
    wrong = await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=email, password="not-the-password")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    unknown = await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=new_email(), password="whatever-pw")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert (wrong.reason, wrong.message) == (unknown.reason, unknown.message)


async def test_repeated_login_failures_are_rate_limited(auth_stub):
    email = new_email()
    await register(auth_stub, email)
    for _ in range(4):
        await expect_error(
            auth_stub.Login(auth_pb2.LoginRequest(email=email, password="bad-password")),
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        )
    limited = await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=email, password="bad-password")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LOGIN_RATE_LIMITED",
    )
    from google.rpc import error_details_pb2

    retry = limited.detail(error_details_pb2.RetryInfo)
    assert retry is not None and retry.retry_delay.seconds > 0
    # Even the right password waits out the pause.
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=email, password="correct-horse")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LOGIN_RATE_LIMITED",
    )


async def test_admin_operations(auth_stub, admin_session):
    admin = bearer(admin_session)
    email = new_email()
    created = await auth_stub.CreateUser(
        auth_pb2.CreateUserRequest(email=email, password="initial-pass", name="Made By Admin", role=auth_pb2.ADMIN),
        metadata=admin,
    )
    assert created.role == auth_pb2.ADMIN

    fetched = await auth_stub.GetUser(auth_pb2.GetUserRequest(id=created.id), metadata=admin)
    assert fetched.email == email

    found = await auth_stub.LookupUserByEmail(auth_pb2.LookupUserByEmailRequest(email=email.lower()), metadata=admin)
    assert found.id == created.id

    updated = await auth_stub.UpdateUser(
        auth_pb2.UpdateUserRequest(id=created.id, name="Renamed", role=auth_pb2.USER, active=False), metadata=admin
    )
    assert (updated.name, updated.role, updated.active) == ("Renamed", auth_pb2.USER, False)
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=email, password="initial-pass")),
        grpc.StatusCode.PERMISSION_DENIED,
        "ACCOUNT_DISABLED",
    )

    # Paging walks every user exactly once.
    seen, token = [], ""
    while True:
        page = await auth_stub.ListUsers(auth_pb2.ListUsersRequest(page_size=2, page_token=token), metadata=admin)
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == page.total_size
    assert created.id in seen

    await expect_error(
        auth_stub.LookupUserByEmail(auth_pb2.LookupUserByEmailRequest(email=new_email()), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )


async def test_create_user_is_idempotent_by_request_id(auth_stub, admin_session):
    admin = bearer(admin_session)
    request = auth_pb2.CreateUserRequest(email=new_email(), password="initial-pass", request_id=uuid.uuid4().hex)
    first = await auth_stub.CreateUser(request, metadata=admin)
    again = await auth_stub.CreateUser(request, metadata=admin)
    assert again.id == first.id
    request.name = "different"
    await expect_error(
        auth_stub.CreateUser(request, metadata=admin), grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED"
    )


async def test_batch_lookup_reports_every_entry(auth_stub, auth_internal_stub, service_metadata):
    known = (await register(auth_stub)).user
    response = await auth_internal_stub.BatchLookupUsers(
        auth_pb2.BatchLookupUsersRequest(
            emails=[known.email.upper(), known.email, "nobody-here@example.com", "not-an-email"]
        ),
        metadata=service_metadata,
    )
    assert [(r.user.id, r.error_reason) for r in response.results] == [
        (known.id, ""),
        ("", "DUPLICATE"),
        ("", "NOT_FOUND"),
        ("", "INVALID"),
    ]


@pytest.mark.parametrize(
    "method, request_",
    [
        ("ListUsers", auth_pb2.ListUsersRequest()),
        ("GetUser", auth_pb2.GetUserRequest(id=str(uuid.uuid4()))),
        ("CreateUser", auth_pb2.CreateUserRequest(email="x@example.com", password="long-enough")),
        ("UpdateUser", auth_pb2.UpdateUserRequest(id=str(uuid.uuid4()), name="x")),
        ("LookupUserByEmail", auth_pb2.LookupUserByEmailRequest(email="x@example.com")),
    ],
)
async def test_a_user_is_refused_on_admin_methods(auth_stub, method, request_):
    session = await register(auth_stub)
    await expect_error(
        getattr(auth_stub, method)(request_, metadata=bearer(session)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


async def test_signing_keys_are_public(auth_stub, signing_key):
    keys = await auth_stub.GetSigningKeys(auth_pb2.GetSigningKeysRequest())
    assert [k.kid for k in keys.keys] == [signing_key.kid]
    assert keys.keys[0].kty == "OKP" and keys.keys[0].crv == "Ed25519" and keys.keys[0].alg == "EdDSA"
