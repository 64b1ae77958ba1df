"""Regression tests for the auth findings: Register replays, shared and per-client sign-in limits,
refresh of a disabled account, demo accounts in production, and bounded sign-in input."""

import ipaddress
import uuid

import grpc
import pytest

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from tests.support import bearer, expect_error, settings_for

EXHAUSTED, DENIED = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED


def _email() -> str:
    return f"hardening-{uuid.uuid4().hex[:10]}@example.com"


def _from_a_client_of_its_own() -> tuple:
    """A client address no other test shares (the test runs on loopback, a trusted proxy): a random /64 of
    IPv6's documentation prefix (the service counts an IPv6 client per /64), where 250 IPv4 documentation
    addresses collided between tests now and then."""
    client = ipaddress.IPv6Address(0x20010DB8 << 96 | (uuid.uuid4().int & (2**32 - 1)) << 64 | 1)
    return (("x-forwarded-for", f"198.51.100.7, {client}"),)


async def _register(auth_stub, request_id: str = "", password: str = "first-pass-1"):
    request = auth_pb2.RegisterRequest(email=_email(), password=password, request_id=request_id)
    return request, await auth_stub.Register(request)


async def _server(database_url, signing_key, **overrides):
    from services.auth.app import build

    server, cleanup = await build(settings_for("auth", database_url, **overrides), signing_key)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    async def stop():
        await channel.close()
        await server.stop(0)
        await cleanup()

    return auth_pb2_grpc.AuthServiceStub(channel), stop


async def test_a_register_replay_never_mints_a_session_login_would_refuse(auth_stub, admin_session):
    admin = bearer(admin_session)
    request, session = await _register(auth_stub, request_id=f"reg-{uuid.uuid4().hex}")
    assert (await auth_stub.Register(request)).user.id == session.user.id  # a plain replay still answers

    await auth_stub.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password="first-pass-1", new_password="second-pass-2"),
        metadata=bearer(session),
    )
    await expect_error(auth_stub.Register(request), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")

    request, session = await _register(auth_stub, request_id=f"reg-{uuid.uuid4().hex}")
    await auth_stub.UpdateUser(auth_pb2.UpdateUserRequest(id=session.user.id, active=False), metadata=admin)
    await expect_error(auth_stub.Register(request), DENIED, "ACCOUNT_DISABLED")

    request, session = await _register(auth_stub, request_id=f"reg-{uuid.uuid4().hex}")
    for _ in range(5):
        try:
            await auth_stub.Login(auth_pb2.LoginRequest(email=request.email, password="wrong-password"))
        except grpc.aio.AioRpcError:
            pass
    await expect_error(auth_stub.Register(request), EXHAUSTED, "LOGIN_RATE_LIMITED")


async def test_change_password_guesses_share_the_sign_in_limit(auth_stub):
    _, session = await _register(auth_stub)
    wrong = auth_pb2.ChangePasswordRequest(current_password="not-the-password", new_password="another-pass-3")
    reasons = []
    for _ in range(6):
        try:
            await auth_stub.ChangePassword(wrong, metadata=bearer(session))
        except grpc.aio.AioRpcError as error:
            reasons.append(error.code())
    assert reasons[:4] == [grpc.StatusCode.INVALID_ARGUMENT] * 4 and reasons[4:] == [EXHAUSTED, EXHAUSTED]
    # Paused for sign-in too, even with the right password.
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=session.user.email, password="first-pass-1")),
        EXHAUSTED,
        "LOGIN_RATE_LIMITED",
    )


async def test_spraying_many_accounts_from_one_client_is_slowed(database_url, signing_key):
    stub, stop = await _server(database_url, signing_key, login_max_failures_per_client=3)
    try:
        codes, client = [], _from_a_client_of_its_own()
        for _ in range(5):  # a different account each time: the per-email limit never triggers
            try:
                await stub.Login(auth_pb2.LoginRequest(email=_email(), password="spray-password"), metadata=client)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2 + [EXHAUSTED] * 3
    finally:
        await stop()


async def test_refresh_of_a_disabled_account_says_so(auth_stub, admin_session):
    _, session = await _register(auth_stub)
    await auth_stub.UpdateUser(
        auth_pb2.UpdateUserRequest(id=session.user.id, active=False), metadata=bearer(admin_session)
    )
    await expect_error(
        auth_stub.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=session.refresh_token)),
        DENIED,
        "ACCOUNT_DISABLED",
    )


async def test_demo_accounts_are_refused_in_production(database_url, signing_key):
    from services.auth.demo import ensure_user

    await ensure_user(settings_for("auth", database_url), "eve@example.com", "demo123", "Eve", "USER")
    stub, stop = await _server(database_url, signing_key, environment="production")
    try:
        await expect_error(
            stub.Login(
                auth_pb2.LoginRequest(email="eve@example.com", password="demo123"), metadata=_from_a_client_of_its_own()
            ),
            DENIED,
            "DEMO_ACCOUNT_DISABLED",
        )
    finally:
        await stop()


@pytest.mark.parametrize(
    "email, password, field",
    [
        ("x" * 100_000 + "@example.com", "whatever-1", "email"),
        ("someone@example.com", "p" * 10_000, "password"),
    ],
)
async def test_sign_in_input_is_bounded_before_the_database(auth_stub, caplog, email, password, field):
    error = await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=email, password=password)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert field in error.field_violations
    assert "x" * 1000 not in caplog.text and "p" * 1000 not in caplog.text


async def test_a_long_password_is_just_wrong(auth_stub):
    _, session = await _register(auth_stub)
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=session.user.email, password="q" * 500)),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )


async def test_an_email_shaped_like_a_client_key_cannot_pause_that_client(database_url, signing_key):
    stub, stop = await _server(database_url, signing_key, login_max_failures=2, login_max_failures_per_client=2)
    try:
        victim, attacker = _from_a_client_of_its_own(), _from_a_client_of_its_own()
        address = victim[0][1].rpartition(",")[2].strip()
        for _ in range(4):
            try:
                await stub.Login(
                    auth_pb2.LoginRequest(email=f"client:{address}", password="wrong-password"), metadata=attacker
                )
            except grpc.aio.AioRpcError:
                pass
        _, session = await _register(stub)
        assert (
            await stub.Login(auth_pb2.LoginRequest(email=session.user.email, password="first-pass-1"), metadata=victim)
        ).user.id == session.user.id
    finally:
        await stop()


async def test_a_password_past_72_bytes_never_matches_its_prefix(auth_stub):
    password = "p" * 72
    _, session = await _register(auth_stub, password=password)
    await expect_error(
        auth_stub.Login(auth_pb2.LoginRequest(email=session.user.email, password=password + "x")),
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    assert (await auth_stub.Login(auth_pb2.LoginRequest(email=session.user.email, password=password))).user.id
