"""The refresh grace window: a spent refresh token presented again within REFRESH_REUSE_GRACE_SECONDS of its
use (a double submit: two tabs, a retry whose answer was lost) gets a session of the same family; after the
window the same reuse revokes the family, as a stolen copy should."""

import asyncio
import hashlib
import uuid

import grpc
import psycopg

from coupons.auth.v1 import auth_pb2
from kernel.settings import Settings
from tests.support import bearer, expect_error

GRACE = Settings.from_env("auth").refresh_reuse_grace_seconds


async def _session(auth_stub) -> auth_pb2.Session:
    email = f"grace-{uuid.uuid4().hex[:10]}@example.com"
    return await auth_stub.Register(auth_pb2.RegisterRequest(email=email, password="grace-pass-1"))


def _refresh(auth_stub, token: str):
    return auth_stub.RefreshSession(auth_pb2.RefreshSessionRequest(refresh_token=token))


def _row(database_url: str, token: str) -> tuple:
    """(family_id, used_at, revoked_at) of a refresh token."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT family_id, used_at, revoked_at FROM auth.refresh_tokens WHERE token_hash = %s",
            (hashlib.sha256(token.encode()).digest(),),
        ).fetchone()


def _age_use(database_url: str, token: str, seconds: float) -> None:
    """Moves the token's use into the past, as if the second call came that much later."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE auth.refresh_tokens SET used_at = used_at - make_interval(secs => %s) WHERE token_hash = %s",
            (seconds, hashlib.sha256(token.encode()).digest()),
        )


async def test_the_default_grace_is_a_few_seconds():
    assert 0 < GRACE <= 30


async def test_a_double_submit_within_the_window_gets_a_session_of_the_same_family(auth_stub, database_url):
    session = await _session(auth_stub)
    first = await _refresh(auth_stub, session.refresh_token)
    second = await _refresh(auth_stub, session.refresh_token)  # the second tab, a moment later
    assert second.refresh_token not in (first.refresh_token, session.refresh_token)
    assert second.user.id == first.user.id == session.user.id
    family = _row(database_url, session.refresh_token)[0]
    assert _row(database_url, first.refresh_token)[0] == family == _row(database_url, second.refresh_token)[0]
    # Nobody was signed out: both tabs' sessions work and refresh on.
    for tab in (first, second):
        assert (await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tab))).id == session.user.id
        assert (await _refresh(auth_stub, tab.refresh_token)).user.id == session.user.id
    assert all(_row(database_url, t.refresh_token)[2] is None for t in (session, first, second))


async def test_concurrent_refreshes_with_one_token_all_succeed(auth_stub):
    session = await _session(auth_stub)
    answers = await asyncio.gather(*(_refresh(auth_stub, session.refresh_token) for _ in range(3)))
    assert len({a.refresh_token for a in answers}) == 3 and {a.user.id for a in answers} == {session.user.id}


async def test_reuse_after_the_window_still_revokes_the_family(auth_stub, database_url):
    session = await _session(auth_stub)
    first = await _refresh(auth_stub, session.refresh_token)
    _age_use(database_url, session.refresh_token, GRACE + 1)
    await expect_error(
        _refresh(auth_stub, session.refresh_token), grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED"
    )
    # The whole family is revoked, the fresh token too, and a revoked token gets no grace either.
    assert _row(database_url, first.refresh_token)[2] is not None
    await expect_error(
        _refresh(auth_stub, first.refresh_token), grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED"
    )


async def test_the_window_runs_from_the_first_use_and_does_not_move(auth_stub, database_url):
    session = await _session(auth_stub)
    await _refresh(auth_stub, session.refresh_token)
    used_at = _row(database_url, session.refresh_token)[1]
    _age_use(database_url, session.refresh_token, GRACE - 2)
    await _refresh(auth_stub, session.refresh_token)  # still inside: served, and the use keeps its time
    assert _row(database_url, session.refresh_token)[1] < used_at
    _age_use(database_url, session.refresh_token, 3)
    await expect_error(
        _refresh(auth_stub, session.refresh_token), grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED"
    )
