"""The redemption service's ledger as the books domain sees it: rules, codes and counts over gRPC.

Every call is made as the books service itself (kernel.grpc_clients.ServiceIdentity), for the person
behind the request, with the request id. A ledger that does not answer becomes
kernel.errors.Unavailable (retryable); its own refusals keep their meaning for the caller.
"""

from dataclasses import dataclass

import grpc

from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from kernel import grpc_clients
from kernel.grpc_clients import ServiceIdentity
from kernel.remote_errors import remote_call
from kernel.timestamps import to_timestamp
from services.books.repository import BookRow

CALL_TIMEOUT_SECONDS = 10.0
# Codes per AddCodes call: about 1 MB on the wire, one ledger transaction.
ADD_CODES_BATCH = 50_000
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
)


# The books domain's discount types as the ledger's API numbers them.
DISCOUNT_TYPES = {
    "": redemption_pb2.DISCOUNT_TYPE_UNSPECIFIED,
    "PERCENTAGE": redemption_pb2.DISCOUNT_TYPE_PERCENTAGE,
    "FIXED_AMOUNT": redemption_pb2.DISCOUNT_TYPE_FIXED_AMOUNT,
}


@dataclass(frozen=True)
class AddedCodes:
    inserted: int
    existing: list[str]


@dataclass(frozen=True)
class BookCounts:
    total: int
    available: int
    assigned: int
    locked: int
    redeemed: int
    redemptions: int
    expired: int


def _ledger_call(doing: str):
    """A ledger that does not answer (or sheds load) is LEDGER_UNAVAILABLE, retryable; refusals pass through."""
    return remote_call("redemption", not_answering=RETRYABLE, unavailable_reason="LEDGER_UNAVAILABLE", doing=doing)


class LedgerClient:
    def __init__(self, address: str, identity: ServiceIdentity):
        self.channel = grpc_clients.channel(address)
        self.stub = redemption_pb2_grpc.LedgerInternalServiceStub(self.channel)
        self.identity = identity

    async def put_rules(self, book: BookRow) -> None:
        rules = redemption_pb2.BookRules(
            book_id=book.id,
            allow_multi_redemption=book.allow_multi_redemption,
            max_redemptions_per_user=book.max_redemptions_per_user,
            max_assignments_per_user=book.max_assignments_per_user,
            lock_ttl_seconds=book.lock_ttl_seconds,
            valid_from=to_timestamp(book.valid_from),
            valid_until=to_timestamp(book.valid_until),
            archived=book.status == "ARCHIVED",
            version=book.rules_version,
            allow_self_claim=book.allow_self_claim,
            shared=book.shared,
            max_redemptions_total=book.max_redemptions_total,
            discount_type=DISCOUNT_TYPES[book.discount_type],
            percent_off=book.percent_off,
            amount_off=book.amount_off,
            max_discount=book.max_discount,
            min_order_amount=book.min_order_amount,
            currency=book.currency,
            rollback_window_seconds=book.rollback_window_seconds,
            book_name=book.name,
        )
        with _ledger_call("storing the book's rules"):
            await self.stub.PutBookRules(
                redemption_pb2.PutBookRulesRequest(rules=rules),
                metadata=await self.identity.metadata(),
                timeout=CALL_TIMEOUT_SECONDS,
            )

    async def add_codes(self, book_id: str, codes: list[str]) -> AddedCodes:
        with _ledger_call("adding codes"):
            response = await self.stub.AddCodes(
                redemption_pb2.AddCodesRequest(book_id=book_id, codes=codes),
                metadata=await self.identity.metadata(),
                timeout=CALL_TIMEOUT_SECONDS * 6,
            )
        return AddedCodes(response.inserted, list(response.existing))

    async def book_counts(self, book_id: str) -> BookCounts:
        with _ledger_call("counting the book's codes"):
            counts = await self.stub.GetBookCounts(
                redemption_pb2.GetBookCountsRequest(book_id=book_id),
                metadata=await self.identity.metadata(),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        return BookCounts(
            counts.total,
            counts.available,
            counts.assigned,
            counts.locked,
            counts.redeemed,
            counts.redemptions,
            counts.expired,
        )

    async def close(self) -> None:
        await self.channel.close()
