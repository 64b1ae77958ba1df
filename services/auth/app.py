"""Wires the auth service: repository, domain, servicer and the shared server."""

from coupons.auth.v1 import auth_pb2_grpc
from kernel import db
from kernel.db import create_engine
from kernel.purge import Purger
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import CALLING_SERVICES, Settings
from kernel.tokens import Revocation, SigningKey, TokenIssuer, TokenVerifier
from services.auth.demo import DEMO_EMAILS
from services.auth.domain import AuthDomain
from services.auth.keys import load_signing_key
from services.auth.passwords import PasswordHasher
from services.auth.repository import AuthRepository, purge_targets
from services.auth.service_tokens import ServiceCredentials
from services.auth.servicer import SERVICE_NAMES, AuthInternalServicer, AuthServicer


async def build(settings: Settings, signing_key: SigningKey | None = None):
    key = signing_key or load_signing_key(settings)
    engine = create_engine(settings)
    issuer = TokenIssuer(key, settings.jwt_issuer, settings.jwt_audience, settings.access_token_ttl_seconds)
    domain = AuthDomain(
        AuthRepository(engine),
        PasswordHasher(settings.bcrypt_rounds),
        issuer,
        settings.refresh_token_ttl_seconds,
        settings.login_max_failures,
        settings.login_lockout_seconds,
        settings.login_max_failures_per_client,
        refused_emails=DEMO_EMAILS if settings.production else frozenset(),
        reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
    )
    servicer = AuthServicer(domain, key, settings.jwt_issuer, settings.jwt_audience)
    secrets = {name: settings.service_secret(name) for name in CALLING_SERVICES}
    internal = AuthInternalServicer(domain, ServiceCredentials(secrets, issuer, settings.service_token_ttl_seconds))

    def register(server) -> None:
        auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
        auth_pb2_grpc.add_AuthInternalServiceServicer_to_server(internal, server)

    async def revocations() -> dict[str, Revocation]:
        return {r.user_id: Revocation(r.not_before.timestamp(), r.disabled) for r in await domain.revocations()}

    # The auth service verifies with its own key and reads revocations from its own schema: no hop to itself.
    verifier = TokenVerifier.with_keys([key.public_key], settings.jwt_issuer, settings.jwt_audience, revocations)
    purger = Purger(settings, purge_targets(settings.refresh_token_retention_seconds))
    spec = ServiceSpec(
        component="auth",
        service_names=SERVICE_NAMES,
        register=register,
        ready=lambda: db.ping(engine),
        background=(purger.run,) if purger.enabled else (),
    )

    async def cleanup() -> None:
        await purger.close()
        await engine.dispose()

    return GrpcServer(spec, verifier, revocation_poll_seconds=settings.revocation_poll_seconds), cleanup
