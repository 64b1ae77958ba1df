"""Calls to other services: channels, the service's own identity, and the token verifier fed by auth.

A service calls another as itself: it exchanges its secret for a short-lived SERVICE token at auth
(OAuth 2.0 client credentials), renews it at half its lifetime, and sends the person it acts for as
x-actor-id, so the callee records that person in history while authorizing the service.
"""

import asyncio
import datetime as dt
import logging
import time

import grpc

from kernel.context import principal_var, request_id_var
from kernel.errors import Unavailable
from kernel.remote_errors import domain_error
from kernel.settings import Settings
from kernel.tokens import Revocation, RevocationLoader, TokenVerifier, public_key_from_jwk

log = logging.getLogger("kernel.grpc_clients")

CHANNEL_OPTIONS = [
    # Headless Services resolve to every pod; round robin spreads calls over them (client-side balancing).
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30000),
]
AUTH_CALL_TIMEOUT_SECONDS = 5.0


def channel(address: str) -> grpc.aio.Channel:
    target = address if "://" in address or address.startswith("dns:") else f"dns:///{address}"
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


class ServiceIdentity:
    """This service's SERVICE token from auth, fetched on first use and renewed before it expires."""

    def __init__(self, name: str, secret: str, auth_address: str):
        from coupons.auth.v1 import auth_pb2_grpc

        self.name = name
        self._secret = secret
        self.channel = channel(auth_address)
        self.auth = auth_pb2_grpc.AuthInternalServiceStub(self.channel)
        self._token = ""
        self._renew_at = float("-inf")
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if time.monotonic() >= self._renew_at:
            async with self._lock:
                if time.monotonic() >= self._renew_at:
                    await self._sign_in()
        return self._token

    async def _sign_in(self) -> None:
        from coupons.auth.v1 import auth_pb2

        request = auth_pb2.IssueServiceTokenRequest(service=self.name, secret=self._secret)
        try:
            response = await self.auth.IssueServiceToken(request, timeout=AUTH_CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:  # a configuration fault, not the person's
                log.error("service credentials refused", extra={"fields": {"service": self.name}})
                raise Unavailable(
                    f"The {self.name} service cannot sign in to auth (its SERVICE_SECRET is refused).",
                    reason="SERVICE_CREDENTIALS_REFUSED",
                ) from None
            raise (domain_error(error, "auth", doing="signing in as a service") or error) from None
        self._token = response.access_token
        self._renew_at = time.monotonic() + response.expires_in / 2

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: this service's token, the request id, and the person the call acts for."""
        metadata = [("authorization", f"Bearer {await self.token()}")]
        if request_id_var.get():
            metadata.append(("x-request-id", request_id_var.get()))
        principal = principal_var.get()
        if principal is not None:
            metadata.append(("x-actor-id", principal.actor))
        return tuple(metadata)

    async def close(self) -> None:
        await self.channel.close()


def revocation_loader(identity: ServiceIdentity) -> RevocationLoader:
    """Reads auth's revocations as this service."""
    from coupons.auth.v1 import auth_pb2

    async def load_revocations() -> dict[str, Revocation]:
        response = await identity.auth.ListRevocations(
            auth_pb2.ListRevocationsRequest(), metadata=await identity.metadata(), timeout=AUTH_CALL_TIMEOUT_SECONDS
        )
        return {
            r.user_id: Revocation(r.not_before_time.ToDatetime(dt.UTC).timestamp(), r.disabled)
            for r in response.revocations
        }

    return load_revocations


def remote_verifier(settings: Settings, identity: ServiceIdentity) -> TokenVerifier:
    """Verifies tokens with the keys auth publishes (fetched on first use and on a new key id) and refuses
    the ones auth has revoked (polled every REVOCATION_POLL_SECONDS as this service)."""
    from coupons.auth.v1 import auth_pb2, auth_pb2_grpc

    keys_stub = auth_pb2_grpc.AuthServiceStub(identity.channel)

    async def load_keys():
        response = await keys_stub.GetSigningKeys(auth_pb2.GetSigningKeysRequest(), timeout=AUTH_CALL_TIMEOUT_SECONDS)
        return {key.kid: public_key_from_jwk({"kty": key.kty, "crv": key.crv, "x": key.x}) for key in response.keys}

    return TokenVerifier(load_keys, settings.jwt_issuer, settings.jwt_audience, revocation_loader(identity))


def identity_of(settings: Settings) -> ServiceIdentity:
    """This component's identity towards the other services."""
    return ServiceIdentity(settings.component, settings.service_secret(settings.component), settings.auth_addr)
