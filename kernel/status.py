"""Builds rich google.rpc.Status errors (ErrorInfo, BadRequest, PreconditionFailure, ...) from domain errors."""

import grpc
from google.protobuf import any_pb2, duration_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from kernel import errors

_CODES: list[tuple[type[errors.DomainError], int]] = [
    (errors.InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (errors.NotFound, code_pb2.NOT_FOUND),
    (errors.AlreadyExists, code_pb2.ALREADY_EXISTS),
    (errors.FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (errors.Aborted, code_pb2.ABORTED),
    (errors.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (errors.PermissionDenied, code_pb2.PERMISSION_DENIED),
    (errors.ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
    (errors.Unavailable, code_pb2.UNAVAILABLE),
]


def _pack(detail: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _details(error: errors.DomainError) -> list[message.Message]:
    details: list[message.Message] = []
    if isinstance(error, errors.InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, (errors.NotFound, errors.AlreadyExists)):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=error.resource_type, resource_name=error.resource_name, description=error.message
            )
        )
    if isinstance(error, errors.AlreadyExists) and error.field:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
                ]
            )
        )
    if isinstance(error, errors.FailedPrecondition) and error.violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, errors.ResourceExhausted):
        if error.violations:
            details.append(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        if error.retry_after_seconds is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(error.retry_after_seconds * 1000))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if isinstance(error, errors.Unavailable):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_seconds * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if isinstance(error, errors.Aborted):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(50)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return details


def code_of(error: errors.DomainError) -> int:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return code_pb2.INTERNAL


def from_domain_error(error: errors.DomainError, domain: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    status = status_pb2.Status(
        code=code_of(error),
        message=error.message,
        details=[_pack(info)] + [_pack(d) for d in _details(error)],
    )
    return rpc_status.to_status(status)


def internal(request_id: str, domain: str) -> grpc.Status:
    """An unexpected failure: no internals, only the request id to find the log line."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"Internal error; quote request id {request_id} when reporting it.",
        details=[
            _pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain, metadata={"request_id": request_id})),
            _pack(error_details_pb2.RequestInfo(request_id=request_id)),
        ],
    )
    return rpc_status.to_status(status)
