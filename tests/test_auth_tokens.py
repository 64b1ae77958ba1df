"""Token attacks: every forged, foreign or stale token is refused by the verifying interceptor."""

import base64
import json
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from coupons.auth.v1 import auth_pb2
from kernel.tokens import SigningKey, TokenIssuer
from tests.support import expect_error


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user_id: str, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": "coupons-auth",
        "aud": "coupons",
        "sub": user_id,
        "role": "ADMIN",
        "iat": now,
        "exp": now + 600,
        "jti": "x",
    }
    claims.update(overrides)
    return claims


@pytest.fixture(scope="module")
async def victim(auth_stub):
    import uuid

    return (
        await auth_stub.Register(
            auth_pb2.RegisterRequest(email=f"victim-{uuid.uuid4().hex[:8]}@example.com", password="correct-horse")
        )
    ).user


async def _me(auth_stub, token: str, reason: str):
    await expect_error(
        auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {token}"),)),
        grpc.StatusCode.UNAUTHENTICATED,
        reason,
    )


async def test_a_genuine_token_is_accepted(auth_stub, signing_key, victim):
    token = TokenIssuer(signing_key, "coupons-auth", "coupons", 600).issue(victim.id, "USER")
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {token}"),))
    assert me.id == victim.id


async def test_alg_none_is_refused(auth_stub, signing_key, victim):
    token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': signing_key.kid})}.{_b64(_claims(victim.id))}."
    await _me(auth_stub, token, "BAD_TOKEN_ALGORITHM")


async def test_hs256_signed_with_the_public_key_is_refused(auth_stub, signing_key, victim):
    public_pem = signing_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": signing_key.kid})
    payload = _b64(_claims(victim.id))
    import hashlib
    import hmac

    signature = (
        base64.urlsafe_b64encode(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    await _me(auth_stub, f"{header}.{payload}.{signature}", "BAD_TOKEN_ALGORITHM")


async def test_expired_token_is_refused(auth_stub, signing_key, victim):
    token = TokenIssuer(signing_key, "coupons-auth", "coupons", 60).issue(victim.id, "USER", now=time.time() - 3600)
    await _me(auth_stub, token, "TOKEN_EXPIRED")


@pytest.mark.parametrize("issuer, audience", [("someone-else", "coupons"), ("coupons-auth", "another-api")])
async def test_wrong_issuer_or_audience_is_refused(auth_stub, signing_key, victim, issuer, audience):
    token = TokenIssuer(signing_key, issuer, audience, 600).issue(victim.id, "USER")
    await _me(auth_stub, token, "TOKEN_WRONG_AUDIENCE")


async def test_tampered_payload_is_refused(auth_stub, signing_key, victim):
    token = TokenIssuer(signing_key, "coupons-auth", "coupons", 600).issue(victim.id, "USER")
    header, _, signature = token.split(".")
    elevated = _b64(_claims(victim.id, role="ADMIN"))
    await _me(auth_stub, f"{header}.{elevated}.{signature}", "INVALID_TOKEN")


async def test_unknown_key_id_is_refused(auth_stub, victim):
    stranger = SigningKey.generate()
    token = TokenIssuer(stranger, "coupons-auth", "coupons", 600).issue(victim.id, "ADMIN")
    await _me(auth_stub, token, "UNKNOWN_SIGNING_KEY")


async def test_a_token_without_required_claims_is_refused(auth_stub, signing_key, victim):
    claims = _claims(victim.id)
    del claims["jti"]
    token = jwt.encode(claims, signing_key.private_key, algorithm="EdDSA", headers={"kid": signing_key.kid})
    await _me(auth_stub, token, "INVALID_TOKEN")


async def test_garbage_is_refused(auth_stub):
    await _me(auth_stub, "not-a-jwt", "MALFORMED_TOKEN")
