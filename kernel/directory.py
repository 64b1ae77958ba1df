"""The auth service's users as other services need them, asked as the calling service itself.

Pools resolves members by email or id; the ledger refuses to assign codes to an account that does not
exist or is deactivated (a person's own token already proves that for themself, so redeem and a
self-claim need no call).
"""

from dataclasses import dataclass

from kernel.errors import FailedPrecondition, NotFound
from kernel.grpc_clients import ServiceIdentity
from kernel.remote_errors import remote_call

LOOKUP_BATCH = 1000  # BatchLookupUsers takes at most 1000 entries per call
CALL_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class FoundUser:
    """One looked-up entry: the user, or why there is none (NOT_FOUND, INVALID or DUPLICATE)."""

    query: str
    user_id: str
    email: str
    active: bool
    error_reason: str


class Directory:
    def __init__(self, identity: ServiceIdentity):
        self.identity = identity

    async def lookup(self, emails: list[str], user_ids: list[str]) -> dict[str, FoundUser]:
        """Looks up every entry in batches; returns the results by entry as given."""
        from coupons.auth.v1 import auth_pb2

        entries = [("email", e) for e in emails] + [("id", i) for i in user_ids]
        results: dict[str, FoundUser] = {}
        for start in range(0, len(entries), LOOKUP_BATCH):
            batch = entries[start : start + LOOKUP_BATCH]
            request = auth_pb2.BatchLookupUsersRequest(
                emails=[v for k, v in batch if k == "email"], user_ids=[v for k, v in batch if k == "id"]
            )
            with remote_call("auth", doing="looking up users"):
                response = await self.identity.auth.BatchLookupUsers(
                    request, metadata=await self.identity.metadata(), timeout=CALL_TIMEOUT_SECONDS
                )
            results.update(
                {
                    r.query: FoundUser(r.query, r.user.id, r.user.email, r.user.active, r.error_reason)
                    for r in response.results
                }
            )
        return results

    async def check_assignable(self, user_ids: list[str]) -> None:
        """Refuses the first user that does not exist (NOT_FOUND) or is deactivated (FAILED_PRECONDITION)."""
        found = await self.lookup([], list(dict.fromkeys(user_ids)))
        for user_id in user_ids:
            user = found[user_id]
            if user.error_reason:
                raise NotFound(
                    "user",
                    user_id,
                    reason="USER_NOT_FOUND",
                    message=f"User {user_id} does not exist; codes go only to existing accounts.",
                )
            if not user.active:
                raise FailedPrecondition(
                    f"User {user.email} is deactivated; codes are not assigned to deactivated accounts.",
                    reason="USER_DISABLED",
                    metadata={"user_id": user_id, "email": user.email},
                )
