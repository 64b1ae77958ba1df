"""The redemption ledger as the pools domain sees it, over gRPC (users come from kernel.directory).

Every call is made as the pools service itself, for the person behind the request; refusals come back
through kernel.remote_errors with the same code, reason and message.
"""

import datetime as dt

from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from kernel import grpc_clients
from kernel.grpc_clients import ServiceIdentity
from kernel.remote_errors import remote_call
from services.pools.distribution import BookSnapshot

CALL_TIMEOUT_SECONDS = 30.0
# One BulkAssign of up to a million codes is one ledger transaction; give it time.
BULK_ASSIGN_TIMEOUT_SECONDS = 600.0


class Ledger:
    """Held counts and bulk assignment from the redemption service."""

    def __init__(self, address: str, identity: ServiceIdentity):
        self.channel = grpc_clients.channel(address)
        self.stub = redemption_pb2_grpc.LedgerInternalServiceStub(self.channel)
        self.identity = identity

    async def snapshot(self, book_id: str, user_ids: list[str]) -> BookSnapshot:
        request = redemption_pb2.GetAssignmentCountsRequest(book_id=book_id, user_ids=user_ids)
        with remote_call("redemption"):
            response = await self.stub.GetAssignmentCounts(
                request, metadata=await self.identity.metadata(), timeout=CALL_TIMEOUT_SECONDS
            )
        rules = response.rules
        return BookSnapshot(
            held={c.user_id: c.held for c in response.counts},
            available=response.available,
            max_assignments_per_user=rules.max_assignments_per_user,
            archived=rules.archived,
            valid_from=rules.valid_from.ToDatetime(dt.UTC) if rules.HasField("valid_from") else None,
            valid_until=rules.valid_until.ToDatetime(dt.UTC) if rules.HasField("valid_until") else None,
            shared=rules.shared,
        )

    async def bulk_assign(self, book_id: str, counts: dict[str, int], distribution_id: str, request_id: str) -> int:
        """Assigns counts[user] random codes to each user in one ledger transaction; returns codes assigned."""
        request = redemption_pb2.BulkAssignRequest(
            book_id=book_id,
            distribution_id=distribution_id,
            request_id=request_id,
            assignments=[redemption_pb2.UserCodeCount(user_id=u, count=n) for u, n in counts.items()],
        )
        with remote_call("redemption"):
            response = await self.stub.BulkAssign(
                request, metadata=await self.identity.metadata(), timeout=BULK_ASSIGN_TIMEOUT_SECONDS
            )
        return response.assigned

    async def close(self) -> None:
        await self.channel.close()
