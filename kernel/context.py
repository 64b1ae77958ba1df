"""Per-call context (request id, caller) carried in contextvars from the interceptors to the domain."""

import contextvars
from dataclasses import dataclass

from kernel.errors import PermissionDenied, Unauthenticated

ADMIN = "ADMIN"
USER = "USER"


@dataclass(frozen=True)
class Principal:
    """The verified caller of an RPC."""

    user_id: str
    role: str
    token: str  # the raw bearer token, forwarded on calls to other services

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)
# The address of the person's client: the gRPC peer, or what a trusted proxy (the gateway) says it saw.
client_address_var: contextvars.ContextVar[str] = contextvars.ContextVar("client_address", default="")


def client_address() -> str:
    """The calling client's IP address ("" when unknown), for per-client limits."""
    return client_address_var.get()


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated()
    return principal


def require_admin() -> Principal:
    principal = current_principal()
    if not principal.is_admin:
        raise PermissionDenied()
    return principal


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata for a call to another service: the caller's credentials and the request id."""
    metadata = [("x-request-id", request_id_var.get())] if request_id_var.get() else []
    principal = principal_var.get()
    if principal is not None:
        metadata.append(("authorization", f"Bearer {principal.token}"))
    return tuple(metadata)
