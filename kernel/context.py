"""Per-call context (request id, caller, client address) carried in contextvars from the interceptors to the domain."""

import contextvars
from collections.abc import Callable
from dataclasses import dataclass

from kernel.errors import Unauthenticated

ADMIN = "ADMIN"
USER = "USER"
SERVICE = "SERVICE"  # another service of the suite, signed in as itself
PERSON_ROLES = (USER, ADMIN)


@dataclass(frozen=True)
class Principal:
    """The verified caller of an RPC."""

    user_id: str  # a person's id, or "service:<name>" for a service
    role: str
    issued_at: float = 0.0  # the token's iat, checked against revocations
    # Whom the call is for: the person for a person's call; for a service's call, the person it acts for
    # (its x-actor-id), recorded in history. A service's claim is trusted because the service is.
    actor_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE

    @property
    def actor(self) -> str:
        return self.actor_id or self.user_id


request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)
# How to find the person's client address for this call (the gRPC peer, or what a trusted proxy such as
# the gateway says it saw): derived only when asked for, since only sign-in needs it.
client_address_var: contextvars.ContextVar[Callable[[], str]] = contextvars.ContextVar(
    "client_address", default=lambda: ""
)


def client_address() -> str:
    """The calling client's IP address ("" when unknown), for per-client limits."""
    return client_address_var.get()()


def current_principal() -> Principal:
    """The caller; the authentication interceptor has already checked it may call this method."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated()
    return principal
