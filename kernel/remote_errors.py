"""A refusal from another service, back as the kernel error that maps to the same status (the inverse of
kernel/status.py), so our caller sees the same code, reason and message; a service that does not answer
becomes Unavailable (retryable)."""

import contextlib
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2

from kernel import errors

NOT_ANSWERING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


_Detail = TypeVar("_Detail", bound=message.Message)


def _details(error: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    """The rich details of a google.rpc.Status in the trailers, packed."""
    found: list[any_pb2.Any] = []
    for key, value in error.trailing_metadata() or ():
        # A binary (-bin) key's value is always bytes.
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            found.extend(status_pb2.Status.FromString(value).details)
    return found


def _detail(details: list[any_pb2.Any], default: _Detail) -> _Detail:
    """The last detail of default's type, else default."""
    found = default
    for packed in details:
        candidate = type(default)()
        if packed.Unpack(candidate):  # False (and untouched) when packed holds another type
            found = candidate
    return found


def domain_error(
    error: grpc.aio.AioRpcError,
    service: str,
    *,
    not_answering=NOT_ANSWERING,
    unavailable_reason: str = "",
    doing: str = "",
) -> errors.DomainError | None:
    """The remote refusal as the kernel error that maps back to the same status; None when unexpected.

    Codes in not_answering become Unavailable, reason unavailable_reason (default <SERVICE>_UNAVAILABLE).
    """
    code, message, details = error.code(), error.details() or "", _details(error)
    if code in not_answering:
        while_doing = f" while {doing}" if doing else ""
        return errors.Unavailable(
            f"The {service} service did not answer{while_doing} ({code.name}); retry shortly.",
            reason=unavailable_reason or f"{service.upper()}_UNAVAILABLE",
            metadata={"service": service, "remote_code": code.name, **({"operation": doing} if doing else {})},
        )
    info = _detail(details, error_details_pb2.ErrorInfo(reason=code.name))
    reason, metadata = info.reason, dict(info.metadata)
    resource = _detail(details, error_details_pb2.ResourceInfo())
    mapped: errors.DomainError
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = _detail(details, error_details_pb2.BadRequest())
        mapped = errors.InvalidArgument(
            [errors.FieldViolation(v.field, v.description) for v in bad.field_violations],
            reason=reason,
            message=message,
        )
    elif code == grpc.StatusCode.NOT_FOUND:
        mapped = errors.NotFound(resource.resource_type, resource.resource_name, reason=reason, message=message)
    elif code == grpc.StatusCode.ALREADY_EXISTS:
        mapped = errors.AlreadyExists(resource.resource_type, resource.resource_name, reason=reason, message=message)
    elif code == grpc.StatusCode.FAILED_PRECONDITION:
        failure = _detail(details, error_details_pb2.PreconditionFailure())
        mapped = errors.FailedPrecondition(
            message,
            reason=reason,
            violations=[errors.PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations],
        )
    elif code == grpc.StatusCode.ABORTED:
        mapped = errors.Aborted(message, reason=reason)
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        mapped = errors.PermissionDenied(message, reason=reason)
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        mapped = errors.Unauthenticated(message, reason=reason)
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        mapped = errors.ResourceExhausted(message, reason=reason)
    else:
        return None
    mapped.metadata = metadata  # the remote's values, as it sent them
    return mapped


@contextlib.contextmanager
def remote_call(service: str, **options):
    """Around a call to another service: its refusals raised as domain errors (see domain_error)."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        mapped = domain_error(error, service, **options)
        if mapped is None:
            raise
        raise mapped from error
