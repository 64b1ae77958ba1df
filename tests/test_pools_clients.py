"""A refusal by another service reaches the pools caller with the same code, reason, message and details."""

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from kernel import errors, status
from kernel.remote_errors import domain_error


def remote_error(error: errors.DomainError) -> grpc.aio.AioRpcError:
    """What a kernel-built service sends for this domain error, as a client receives it."""
    sent = status.from_domain_error(error, "redemption.coupons")
    return grpc.aio.AioRpcError(
        sent.code, grpc.aio.Metadata(), grpc.aio.Metadata(*sent.trailing_metadata), details=sent.details
    )


def test_a_refusal_maps_back_to_the_same_status():
    refusal = errors.FailedPrecondition(
        "Book b has 5 available codes, the distribution needs 10.",
        reason="INSUFFICIENT_CODES",
        metadata={"available": 5, "needed": 10},
        violations=[errors.PreconditionViolation("INSUFFICIENT_CODES", "books/b", "5 available, 10 needed")],
    )
    mapped = domain_error(remote_error(refusal), "redemption")
    assert isinstance(mapped, errors.FailedPrecondition)
    assert (mapped.message, mapped.reason, mapped.metadata, mapped.violations) == (
        refusal.message,
        refusal.reason,
        refusal.metadata,
        refusal.violations,
    )
    again = status.from_domain_error(mapped, "pools.coupons")
    details = status_pb2.Status.FromString(dict(again.trailing_metadata)["grpc-status-details-bin"])
    assert details.code == code_pb2.FAILED_PRECONDITION
    assert any(d.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR) for d in details.details)


def test_bad_input_keeps_its_field_violations():
    mapped = domain_error(
        remote_error(errors.InvalidArgument.field("assignments[0].count", "must be at least 1")), "redemption"
    )
    assert isinstance(mapped, errors.InvalidArgument)
    assert mapped.violations == [errors.FieldViolation("assignments[0].count", "must be at least 1")]


def test_a_silent_service_is_unavailable_and_an_internal_error_stays_unexpected():
    silent = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")
    assert isinstance(domain_error(silent, "redemption"), errors.Unavailable)
    broken = grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom")
    assert domain_error(broken, "redemption") is None
