"""Domain errors: what went wrong in the service's own terms. The error interceptor maps them to gRPC.

Domain modules raise these; they never import grpc. Every error has a stable UPPER_SNAKE reason and a
single sentence a person can act on.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


class DomainError(Exception):
    """Base of every expected failure."""

    def __init__(self, message: str, *, reason: str, metadata: dict[str, object] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = {key: str(value) for key, value in (metadata or {}).items()}


class InvalidArgument(DomainError):
    def __init__(self, violations: list[FieldViolation], *, reason: str = "INVALID_ARGUMENT", message: str = ""):
        summary = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(summary, reason=reason, metadata={"fields": ",".join(v.field for v in violations)})
        self.violations = violations

    @classmethod
    def field(cls, name: str, description: str, reason: str = "INVALID_ARGUMENT") -> "InvalidArgument":
        return cls([FieldViolation(name, description)], reason=reason)


class NotFound(DomainError):
    def __init__(self, resource_type: str, resource_name: str, *, reason: str = "NOT_FOUND", message: str = ""):
        super().__init__(
            message or f"{resource_type} {resource_name} was not found.",
            reason=reason,
            metadata={"resource_type": resource_type, "resource_name": resource_name},
        )
        self.resource_type = resource_type
        self.resource_name = resource_name


class AlreadyExists(DomainError):
    def __init__(
        self,
        resource_type: str,
        resource_name: str,
        *,
        reason: str = "ALREADY_EXISTS",
        message: str = "",
        field: str = "",
    ):
        super().__init__(
            message or f"{resource_type} {resource_name} already exists.",
            reason=reason,
            metadata={"resource_type": resource_type, "resource_name": resource_name},
        )
        self.resource_type = resource_type
        self.resource_name = resource_name
        self.field = field


class FailedPrecondition(DomainError):
    def __init__(
        self,
        message: str,
        *,
        reason: str,
        metadata: dict[str, object] | None = None,
        violations: list[PreconditionViolation] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = violations or []


class Aborted(DomainError):
    """A concurrency conflict: the caller may retry."""


class Unavailable(DomainError):
    """A service this one depends on did not answer; the caller may retry after a short wait."""

    def __init__(
        self, message: str, *, reason: str, retry_after_seconds: float = 1.0, metadata: dict[str, object] | None = None
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(DomainError):
    def __init__(self, message: str = "A valid bearer token is required.", *, reason: str = "UNAUTHENTICATED"):
        super().__init__(message, reason=reason)


class PermissionDenied(DomainError):
    def __init__(self, message: str = "This method needs the ADMIN role.", *, reason: str = "PERMISSION_DENIED"):
        super().__init__(message, reason=reason)


@dataclass(frozen=True)
class QuotaViolation:
    subject: str
    description: str


class ResourceExhausted(DomainError):
    def __init__(
        self,
        message: str,
        *,
        reason: str,
        retry_after_seconds: float | None = None,
        violations: list[QuotaViolation] | None = None,
        metadata: dict[str, object] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds
        self.violations = list(violations or [])
