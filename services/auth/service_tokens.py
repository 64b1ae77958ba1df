"""Service identity: a service exchanges its own secret for a short-lived SERVICE token (OAuth 2.0
client credentials). The token is verified by every service like any other; only methods whose access
rule admits SERVICE accept it, and no person's token is accepted there."""

import hmac

from kernel.context import SERVICE
from kernel.errors import InvalidArgument, Unauthenticated
from kernel.tokens import TokenIssuer

MAX_SERVICE_NAME_LENGTH = 64
MAX_SECRET_LENGTH = 512


def subject(service: str) -> str:
    return f"service:{service}"


class ServiceCredentials:
    def __init__(self, secrets: dict[str, str], issuer: TokenIssuer, ttl_seconds: int):
        self._secrets = dict(secrets)
        self._issuer = issuer
        self.ttl_seconds = ttl_seconds

    def issue(self, service: str, secret: str) -> str:
        if not service or len(service) > MAX_SERVICE_NAME_LENGTH:
            raise InvalidArgument.field("service", f"is required, at most {MAX_SERVICE_NAME_LENGTH} characters")
        if not secret or len(secret) > MAX_SECRET_LENGTH:
            raise InvalidArgument.field("secret", f"is required, at most {MAX_SECRET_LENGTH} characters")
        expected = self._secrets.get(service, "")
        # Compared in constant time, and an unknown service is refused the same way as a wrong secret.
        if not hmac.compare_digest(expected.encode() or b"\0", secret.encode()):
            raise Unauthenticated("The service credentials are not valid.", reason="INVALID_SERVICE_CREDENTIALS")
        return self._issuer.issue(subject(service), SERVICE, ttl_seconds=self.ttl_seconds)
