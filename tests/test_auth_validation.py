"""Bad input: precise INVALID_ARGUMENT / ALREADY_EXISTS with field violations and a reason, never INTERNAL."""

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2

from coupons.auth.v1 import auth_pb2
from tests.support import bearer, expect_error


@pytest.mark.parametrize(
    "email, password, field, fragment",
    [
        ("not-an-email", "long-enough", "email", "email address"),
        ("", "long-enough", "email", "required"),
        ("a@b", "long-enough", "email", "email address"),
        ("ok@example.com", "short", "password", "at least 8 characters"),
        ("ok@example.com", "x" * 73, "password", "at most 72 bytes"),
        ("ok@example.com", "é" * 37, "password", "at most 72 bytes"),  # 37 characters, 74 bytes
    ],
)
async def test_register_refuses_bad_input(auth_stub, email, password, field, fragment):
    error = await expect_error(
        auth_stub.Register(auth_pb2.RegisterRequest(email=email, password=password)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert fragment in error.field_violations[field]
    assert error.detail(error_details_pb2.ErrorInfo).domain == "auth.coupons"


async def test_a_72_byte_password_is_accepted(auth_stub):
    email = f"max-{uuid.uuid4().hex[:8]}@example.com"
    await auth_stub.Register(auth_pb2.RegisterRequest(email=email, password="p" * 72))
    await auth_stub.Login(auth_pb2.LoginRequest(email=email, password="p" * 72))


async def test_duplicate_email_in_any_letter_case(auth_stub):
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    await auth_stub.Register(auth_pb2.RegisterRequest(email=email, password="long-enough"))
    error = await expect_error(
        auth_stub.Register(auth_pb2.RegisterRequest(email=email.upper(), password="long-enough")),
        grpc.StatusCode.ALREADY_EXISTS,
        "EMAIL_TAKEN",
    )
    assert "email" in error.field_violations
    assert error.detail(error_details_pb2.ResourceInfo).resource_type == "user"


async def test_negative_page_size(auth_stub, admin_session):
    error = await expect_error(
        auth_stub.ListUsers(auth_pb2.ListUsersRequest(page_size=-1), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_SIZE",
    )
    assert error.field_violations["page_size"] == "must not be negative"


async def test_garbage_page_token(auth_stub, admin_session):
    await expect_error(
        auth_stub.ListUsers(auth_pb2.ListUsersRequest(page_token="%%%"), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_bad_user_id(auth_stub, admin_session):
    error = await expect_error(
        auth_stub.GetUser(auth_pb2.GetUserRequest(id="42"), metadata=bearer(admin_session)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_USER_ID",
    )
    assert "id" in error.field_violations


async def test_bad_role_on_update(auth_stub, admin_session):
    error = await expect_error(
        auth_stub.UpdateUser(
            auth_pb2.UpdateUserRequest(id=str(uuid.uuid4()), role=auth_pb2.ROLE_UNSPECIFIED),
            metadata=bearer(admin_session),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "role" in error.field_violations


async def test_admin_cannot_lock_themself_out(auth_stub, admin_session):
    await expect_error(
        auth_stub.UpdateUser(
            auth_pb2.UpdateUserRequest(id=admin_session.user.id, active=False), metadata=bearer(admin_session)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SELF_LOCKOUT",
    )
