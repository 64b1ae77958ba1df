"""The auth and redemption services as the pools domain sees them, over gRPC.

Every call forwards the caller's credentials and request id. A refusal by the other service reaches
our caller with the same code, reason and message; a service that does not answer becomes
kernel.errors.Unavailable (retryable).
"""

import contextlib
import datetime as dt
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from kernel import context, errors, grpc_clients
from services.pools.distribution import BookSnapshot

LOOKUP_BATCH = 1000  # BatchLookupUsers takes at most 1000 entries per call
CALL_TIMEOUT_SECONDS = 30.0
# One BulkAssign of up to a million codes is one ledger transaction; give it time.
BULK_ASSIGN_TIMEOUT_SECONDS = 600.0
NOT_ANSWERING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _details(error: grpc.aio.AioRpcError) -> dict[type, object]:
    """The rich details of a google.rpc.Status in the trailers, by type."""
    found: dict[type, object] = {}
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for packed in status_pb2.Status.FromString(value).details:
            for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                         error_details_pb2.PreconditionFailure, error_details_pb2.ResourceInfo):
                if packed.Is(kind.DESCRIPTOR):
                    found[kind] = kind()
                    packed.Unpack(found[kind])
    return found


def domain_error(error: grpc.aio.AioRpcError, service: str) -> errors.DomainError | None:
    """The remote refusal as the kernel error that maps back to the same status; None when unexpected."""
    code, message, details = error.code(), error.details() or "", _details(error)
    info = details.get(error_details_pb2.ErrorInfo, error_details_pb2.ErrorInfo(reason=code.name))
    reason, metadata = info.reason, dict(info.metadata)
    if code in NOT_ANSWERING:
        return errors.Unavailable(f"The {service} service did not answer ({code.name}); retry shortly.",
                                  reason=f"{service.upper()}_UNAVAILABLE", metadata={"service": service})
    resource = details.get(error_details_pb2.ResourceInfo, error_details_pb2.ResourceInfo())
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = details.get(error_details_pb2.BadRequest, error_details_pb2.BadRequest())
        mapped = errors.InvalidArgument([errors.FieldViolation(v.field, v.description) for v in bad.field_violations],
                                        reason=reason, message=message)
    elif code == grpc.StatusCode.NOT_FOUND:
        mapped = errors.NotFound(resource.resource_type, resource.resource_name, reason=reason, message=message)
    elif code == grpc.StatusCode.ALREADY_EXISTS:
        mapped = errors.AlreadyExists(resource.resource_type, resource.resource_name, reason=reason, message=message)
    elif code == grpc.StatusCode.FAILED_PRECONDITION:
        failure = details.get(error_details_pb2.PreconditionFailure, error_details_pb2.PreconditionFailure())
        mapped = errors.FailedPrecondition(message, reason=reason, violations=[
            errors.PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations])
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
def _remote(service: str):
    try:
        yield
    except grpc.aio.AioRpcError as error:
        mapped = domain_error(error, service)
        if mapped is None:
            raise
        raise mapped from error


@dataclass(frozen=True)
class FoundUser:
    """One looked-up entry: the user, or why there is none (NOT_FOUND, INVALID or DUPLICATE)."""

    query: str
    user_id: str
    email: str
    error_reason: str


class Directory:
    """Users from the auth service."""

    def __init__(self, address: str):
        self.channel = grpc_clients.channel(address)
        self.stub = auth_pb2_grpc.AuthServiceStub(self.channel)

    async def lookup(self, emails: list[str], user_ids: list[str]) -> dict[str, FoundUser]:
        """Looks up every entry in batches; returns the results by entry as given."""
        entries = [("email", e) for e in emails] + [("id", i) for i in user_ids]
        results: dict[str, FoundUser] = {}
        for start in range(0, len(entries), LOOKUP_BATCH):
            batch = entries[start:start + LOOKUP_BATCH]
            request = auth_pb2.BatchLookupUsersRequest(emails=[v for k, v in batch if k == "email"],
                                                       user_ids=[v for k, v in batch if k == "id"])
            with _remote("auth"):
                response = await self.stub.BatchLookupUsers(request, metadata=context.outgoing_metadata(),
                                                            timeout=CALL_TIMEOUT_SECONDS)
            results.update({r.query: FoundUser(r.query, r.user.id, r.user.email, r.error_reason)
                            for r in response.results})
        return results

    async def close(self) -> None:
        await self.channel.close()


class Ledger:
    """Held counts and bulk assignment from the redemption service."""

    def __init__(self, address: str):
        self.channel = grpc_clients.channel(address)
        self.stub = redemption_pb2_grpc.RedemptionServiceStub(self.channel)

    async def snapshot(self, book_id: str, user_ids: list[str]) -> BookSnapshot:
        request = redemption_pb2.GetAssignmentCountsRequest(book_id=book_id, user_ids=user_ids)
        with _remote("redemption"):
            response = await self.stub.GetAssignmentCounts(request, metadata=context.outgoing_metadata(),
                                                           timeout=CALL_TIMEOUT_SECONDS)
        rules = response.rules
        return BookSnapshot(
            held={c.user_id: c.held for c in response.counts}, available=response.available,
            max_assignments_per_user=rules.max_assignments_per_user, archived=rules.archived,
            valid_from=rules.valid_from.ToDatetime(dt.timezone.utc) if rules.HasField("valid_from") else None,
            valid_until=rules.valid_until.ToDatetime(dt.timezone.utc) if rules.HasField("valid_until") else None)

    async def bulk_assign(self, book_id: str, counts: dict[str, int], distribution_id: str,
                          request_id: str) -> int:
        """Assigns counts[user] random codes to each user in one ledger transaction; returns codes assigned."""
        request = redemption_pb2.BulkAssignRequest(
            book_id=book_id, distribution_id=distribution_id, request_id=request_id,
            assignments=[redemption_pb2.UserCodeCount(user_id=u, count=n) for u, n in counts.items()])
        with _remote("redemption"):
            response = await self.stub.BulkAssign(request, metadata=context.outgoing_metadata(),
                                                  timeout=BULK_ASSIGN_TIMEOUT_SECONDS)
        return response.assigned

    async def close(self) -> None:
        await self.channel.close()
