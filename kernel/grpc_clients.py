"""Channels to other services, and the token verifier that reads the auth service's public keys."""

import grpc

from kernel.settings import Settings
from kernel.tokens import TokenVerifier, public_key_from_jwk

CHANNEL_OPTIONS = [
    # Headless Services resolve to every pod; round robin spreads calls over them (client-side balancing).
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30000),
]


def channel(address: str) -> grpc.aio.Channel:
    target = address if "://" in address or address.startswith("dns:") else f"dns:///{address}"
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def remote_verifier(settings: Settings) -> TokenVerifier:
    """Verifies tokens with the keys the auth service publishes (fetched on first use and on a new key id)."""
    from coupons.auth.v1 import auth_pb2, auth_pb2_grpc

    auth_channel = channel(settings.auth_addr)

    async def load_keys():
        response = await auth_pb2_grpc.AuthServiceStub(auth_channel).GetSigningKeys(
            auth_pb2.GetSigningKeysRequest(), timeout=5)
        return {key.kid: public_key_from_jwk({"kty": key.kty, "crv": key.crv, "x": key.x}) for key in response.keys}

    return TokenVerifier(load_keys, settings.jwt_issuer, settings.jwt_audience)
