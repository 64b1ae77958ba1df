"""Access tokens: EdDSA (Ed25519) JWTs with a key id, verified locally by every service."""

import asyncio
import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kernel.context import Principal
from kernel.errors import PermissionDenied, Unauthenticated, Unavailable

log = logging.getLogger("kernel.tokens")

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "role", "iat", "exp", "jti"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": key_id(key), "alg": ALGORITHM, "use": "sig"}


def key_id(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint, so the same key always has the same id."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())[:16]


def public_key_from_jwk(jwk: dict[str, str]) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("only Ed25519 keys are accepted")
    padded = jwk["x"] + "=" * (-len(jwk["x"]) % 4)
    return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(padded))


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public_key)

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> "SigningKey":
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the JWT signing key must be an Ed25519 private key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class TokenIssuer:
    key: SigningKey
    issuer: str
    audience: str
    ttl_seconds: int

    def issue(self, user_id: str, role: str, now: float | None = None, ttl_seconds: int | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "role": role,
            "iat": issued,
            "exp": issued + (ttl_seconds or self.ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.key.private_key, algorithm=ALGORITHM, headers={"kid": self.key.kid})


KeyLoader = Callable[[], Awaitable[dict[str, Ed25519PublicKey]]]


@dataclass(frozen=True)
class Revocation:
    """Tokens of the user issued before not_before (epoch seconds) are refused; while disabled, all are."""

    not_before: float
    disabled: bool


RevocationLoader = Callable[[], Awaitable[dict[str, Revocation]]]


class TokenVerifier:
    """Verifies access tokens against the auth service's public keys, refreshing them on an unknown key id."""

    REFRESH_INTERVAL_SECONDS = 30.0
    # Verifying an Ed25519 signature costs ~10% of a redeem's CPU; the same token comes back on every call.
    CACHE_SIZE = 10_000

    def __init__(
        self, load_keys: KeyLoader, issuer: str, audience: str, load_revocations: RevocationLoader | None = None
    ):
        self._load_keys = load_keys
        self._load_revocations = load_revocations
        self._revoked: dict[str, Revocation] = {}
        self._issuer = issuer
        self._audience = audience
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def with_keys(
        cls, keys: list[Ed25519PublicKey], issuer: str, audience: str, load_revocations: RevocationLoader | None = None
    ) -> "TokenVerifier":
        fixed = {key_id(k): k for k in keys}

        async def load() -> dict[str, Ed25519PublicKey]:
            return fixed

        return cls(load, issuer, audience, load_revocations)

    @property
    def watches_revocations(self) -> bool:
        return self._load_revocations is not None

    async def refresh_revocations(self) -> None:
        if self._load_revocations is not None:
            self._revoked = await self._load_revocations()

    async def keep_revocations(self, every_seconds: float) -> None:
        """Re-reads the revocations forever: a deactivated account is refused within about every_seconds.
        When auth does not answer the last list stays in force (and tokens still expire on their own)."""
        while True:
            try:
                await self.refresh_revocations()
            except Exception as error:
                log.warning("revocations not refreshed", extra={"fields": {"error": repr(error)[:200]}})
            await asyncio.sleep(every_seconds)

    def _check_revoked(self, principal: Principal) -> None:
        revocation = self._revoked.get(principal.user_id)
        if revocation is None:
            return
        if revocation.disabled:
            raise PermissionDenied("This account is deactivated; contact an administrator.", reason="ACCOUNT_DISABLED")
        if principal.issued_at < revocation.not_before:
            raise Unauthenticated("The token was revoked; sign in again.", reason="TOKEN_REVOKED")

    async def _key(self, kid: str) -> Ed25519PublicKey:
        if kid not in self._keys:
            async with self._lock:
                stale = time.monotonic() - self._loaded_at > self.REFRESH_INTERVAL_SECONDS
                if kid not in self._keys and stale:
                    try:
                        self._keys = await self._load_keys()
                    except Exception as error:
                        # Not stamped as loaded: the next call asks again instead of refusing good tokens for 30 s.
                        raise Unavailable(
                            "The token signing keys cannot be fetched from the auth service; retry.",
                            reason="AUTH_KEYS_UNAVAILABLE",
                        ) from error
                    self._loaded_at = time.monotonic()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthenticated("The token was signed with an unknown key.", reason="UNKNOWN_SIGNING_KEY") from None

    async def verify(self, token: str) -> Principal:
        """The caller a token names; a token verified before is taken from the cache until it expires."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            principal = cached[0]
        else:
            principal, expires = await self._verify_signature(token)
            if len(self._verified) >= self.CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))  # the oldest entry
            self._verified[token] = (principal, expires)
        self._check_revoked(principal)
        return principal

    async def _verify_signature(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("The bearer token is malformed.", reason="MALFORMED_TOKEN") from None
        # Refuse anything but our one asymmetric algorithm before touching a key (alg none, HS/RS confusion).
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("The token's signing algorithm is not accepted.", reason="BAD_TOKEN_ALGORITHM")
        key = await self._key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired; sign in again.", reason="TOKEN_EXPIRED") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise Unauthenticated("The token was not issued for this service.", reason="TOKEN_WRONG_AUDIENCE") from None
        except jwt.PyJWTError:
            raise Unauthenticated("The token's signature or claims are invalid.", reason="INVALID_TOKEN") from None
        principal = Principal(user_id=str(claims["sub"]), role=str(claims["role"]), issued_at=float(claims["iat"]))
        return principal, float(claims["exp"])
