"""Wires the auth service: repository, domain, servicer and the shared server."""

from coupons.auth.v1 import auth_pb2_grpc
from kernel.db import create_engine
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import Settings
from kernel.tokens import SigningKey, TokenIssuer, TokenVerifier
from services.auth.domain import AuthDomain
from services.auth.keys import load_signing_key
from services.auth.passwords import PasswordHasher
from services.auth.repository import AuthRepository
from services.auth.servicer import PUBLIC_METHODS, SERVICE_NAME, AuthServicer


async def build(settings: Settings, signing_key: SigningKey | None = None):
    key = signing_key or load_signing_key(settings)
    engine = create_engine(settings)
    issuer = TokenIssuer(key, settings.jwt_issuer, settings.jwt_audience, settings.access_token_ttl_seconds)
    domain = AuthDomain(AuthRepository(engine), PasswordHasher(settings.bcrypt_rounds), issuer,
                        settings.refresh_token_ttl_seconds, settings.login_max_failures,
                        settings.login_lockout_seconds)
    servicer = AuthServicer(domain, key, settings.jwt_issuer, settings.jwt_audience)
    spec = ServiceSpec(
        component="auth",
        service_names=(SERVICE_NAME,),
        register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server),
        public_methods=PUBLIC_METHODS,
    )
    # The auth service verifies with its own key: no network hop to itself.
    verifier = TokenVerifier.with_keys([key.public_key], settings.jwt_issuer, settings.jwt_audience)
    return GrpcServer(spec, verifier), engine.dispose
