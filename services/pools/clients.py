"""The auth and redemption services as the pools domain sees them, over gRPC.

Every call forwards the caller's credentials and request id; refusals come back through
kernel.remote_errors with the same code, reason and message.
"""

import datetime as dt
from dataclasses import dataclass


from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from kernel import context, grpc_clients
from kernel.remote_errors import remote_call
from services.pools.distribution import BookSnapshot

LOOKUP_BATCH = 1000  # BatchLookupUsers takes at most 1000 entries per call
CALL_TIMEOUT_SECONDS = 30.0
# One BulkAssign of up to a million codes is one ledger transaction; give it time.
BULK_ASSIGN_TIMEOUT_SECONDS = 600.0
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
            with remote_call("auth"):
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
        with remote_call("redemption"):
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
        with remote_call("redemption"):
            response = await self.stub.BulkAssign(request, metadata=context.outgoing_metadata(),
                                                  timeout=BULK_ASSIGN_TIMEOUT_SECONDS)
        return response.assigned

    async def close(self) -> None:
        await self.channel.close()
