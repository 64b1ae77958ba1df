"""Calls to other services: channels, the service's own identity, and the token verifier fed by auth.

A service calls another as itself: it exchanges its secret for a short-lived SERVICE token at auth
(OAuth 2.0 client credentials), renews it at half its lifetime, and sends the person it acts for as
x-actor-id, so the callee records that person in history while authorizing the service.
"""

import asyncio
import datetime as dt
import logging
import re
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


# Name resolvers gRPC ships: an address starting with one of these is a complete target already.
RESOLVER_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")
_IPV4_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}:\d+$")
_IPV6_ADDRESS = re.compile(r"^\[[0-9A-Fa-f:.]+\]:\d+$")


def target(address: str) -> str:
    """The gRPC target for an *_ADDR value.

    - `dns:///name:port` (a headless Service: every pod), `ipv4:a:p,b:q`, `ipv6:[a]:p,[b]:q`, `unix:...`: as is;
    - `host:port`: `dns:///host:port`, so a name that resolves to several addresses is balanced over all;
    - `a:p,b:q` without a scheme (IP literals only, e.g. the replicas of `make run`): `ipv4:a:p,b:q`.
    Round robin (CHANNEL_OPTIONS) spreads calls over every address the target resolves to.
    """
    address = address.strip()
    if "://" in address or address.lower().startswith(RESOLVER_SCHEMES):
        return address
    if "," not in address:
        return f"dns:///{address}"
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if all(_IPV4_ADDRESS.match(part) for part in parts):
        return "ipv4:" + ",".join(parts)
    if all(_IPV6_ADDRESS.match(part) for part in parts):
        return "ipv6:" + ",".join(parts)
    raise ValueError(
        f"{address!r}: several addresses in one target must be IP literals of one family (ipv4:a:p,b:q); "
        "for host names use dns:///name:port of a name that resolves to every replica"
    )


def channel(address: str) -> grpc.aio.Channel:
    """A channel balancing round robin over every address the target names or resolves to."""
    return grpc.aio.insecure_channel(target(address), options=CHANNEL_OPTIONS)


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
