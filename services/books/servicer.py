"""BookService over gRPC: protobuf in, domain call, protobuf out."""

from coupons.books.v1 import books_pb2, books_pb2_grpc
from kernel.timestamps import from_timestamp, to_timestamp
from kernel.validation import enum_name
from services.books.domain import MUTABLE_FIELDS, BooksDomain, BookSettings, UploadReport
from services.books.generation import CodeGeneration, GenerationProgress
from services.books.ledger_client import BookCounts
from services.books.repository import BookRow

SERVICE_NAME = books_pb2.DESCRIPTOR.services_by_name["BookService"].full_name
# The domain's discount types as the API numbers them ("": none).
DISCOUNT_TYPES = {
    "": books_pb2.DISCOUNT_TYPE_UNSPECIFIED,
    "PERCENTAGE": books_pb2.DISCOUNT_TYPE_PERCENTAGE,
    "FIXED_AMOUNT": books_pb2.DISCOUNT_TYPE_FIXED_AMOUNT,
}
DISCOUNT_TYPE_OF = {number: kind for kind, number in DISCOUNT_TYPES.items()}


def book_message(book: BookRow) -> books_pb2.Book:
    return books_pb2.Book(
        id=book.id,
        name=book.name,
        description=book.description,
        code_pattern=book.code_pattern,
        code_length=book.code_length,
        code_alphabet=book.code_alphabet,
        allow_multi_redemption=book.allow_multi_redemption,
        max_redemptions_per_user=book.max_redemptions_per_user,
        max_assignments_per_user=book.max_assignments_per_user,
        lock_ttl_seconds=book.lock_ttl_seconds,
        valid_from=to_timestamp(book.valid_from),
        valid_until=to_timestamp(book.valid_until),
        status=book.status,  # the enum value's name
        code_count=book.code_count,
        create_time=to_timestamp(book.created_at),
        update_time=to_timestamp(book.updated_at),
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
    )


def _settings(book: books_pb2.Book) -> BookSettings:
    return BookSettings(
        name=book.name,
        description=book.description,
        code_pattern=book.code_pattern,
        code_length=book.code_length,
        code_alphabet=book.code_alphabet,
        allow_multi_redemption=book.allow_multi_redemption,
        max_redemptions_per_user=book.max_redemptions_per_user,
        max_assignments_per_user=book.max_assignments_per_user,
        lock_ttl_seconds=book.lock_ttl_seconds,
        valid_from=from_timestamp(book, "valid_from"),
        valid_until=from_timestamp(book, "valid_until"),
        allow_self_claim=book.allow_self_claim,
        shared=book.shared,
        max_redemptions_total=book.max_redemptions_total,
        discount_type=DISCOUNT_TYPE_OF.get(book.discount_type, str(book.discount_type)),
        percent_off=book.percent_off,
        amount_off=book.amount_off,
        max_discount=book.max_discount,
        min_order_amount=book.min_order_amount,
        currency=book.currency,
        rollback_window_seconds=book.rollback_window_seconds,
    )


def _update_paths(request: books_pb2.UpdateBookRequest) -> list[str]:
    """The update_mask, or when it is empty every mutable field the request sets (AIP-134)."""
    if request.update_mask.paths:
        return list(request.update_mask.paths)
    return [field.name for field, _ in request.book.ListFields() if field.name in MUTABLE_FIELDS]


def _progress(progress: GenerationProgress) -> books_pb2.GenerateCodesProgress:
    return books_pb2.GenerateCodesProgress(
        generated=progress.generated,
        requested=progress.requested,
        done=progress.done,
        code_space=float(progress.code_space),
    )


def _upload_response(report: UploadReport) -> books_pb2.UploadCodesResponse:
    return books_pb2.UploadCodesResponse(
        received=report.received,
        accepted=report.accepted,
        rejected=[
            books_pb2.RejectedCode(index=r.index, code=r.code, reason=r.reason, message=r.message)
            for r in report.rejected
        ],
    )


def _stats(book_id: str, counts: BookCounts) -> books_pb2.BookStats:
    return books_pb2.BookStats(
        book_id=book_id,
        total=counts.total,
        available=counts.available,
        assigned=counts.assigned,
        locked=counts.locked,
        redeemed=counts.redeemed,
        redemptions=counts.redemptions,
        expired=counts.expired,
    )


async def _single(codes: list[str]):
    yield codes


class BookServicer(books_pb2_grpc.BookServiceServicer):
    def __init__(self, domain: BooksDomain, generation: CodeGeneration):
        self.domain = domain
        self.generation = generation

    async def CreateBook(self, request, context):
        return book_message(await self.domain.create_book(_settings(request.book), request.request_id))

    # Reads are for every signed-in caller; the Authentication interceptor already requires a token.

    async def GetBook(self, request, context):
        return book_message(await self.domain.get_book(request.id))

    async def ListBooks(self, request, context):
        status = (
            ""
            if request.status == books_pb2.BOOK_STATUS_UNSPECIFIED
            else enum_name(books_pb2.BookStatus, request.status, "status")
        )
        books, next_token, total = await self.domain.list_books(
            request.page_size, request.page_token, status, request.name_contains
        )
        return books_pb2.ListBooksResponse(
            books=[book_message(b) for b in books], next_page_token=next_token, total_size=total
        )

    async def UpdateBook(self, request, context):
        book = await self.domain.update_book(
            request.book.id, _settings(request.book), _update_paths(request), request.request_id
        )
        return book_message(book)

    async def ArchiveBook(self, request, context):
        return book_message(await self.domain.archive_book(request.id, request.request_id))

    async def GenerateCodes(self, request, context):
        async for progress in self.generation.generate_codes(request.book_id, request.count, request.request_id):
            yield _progress(progress)

    async def ImportCodes(self, request, context):
        report = await self.domain.upload_codes(request.book_id, request.request_id, _single(list(request.codes)))
        return _upload_response(report)

    async def UploadCodes(self, request_iterator, context):
        chunks = aiter(request_iterator)
        first = await anext(chunks, books_pb2.UploadCodesChunk())

        async def code_lists():
            yield list(first.codes)
            async for chunk in chunks:
                yield list(chunk.codes)

        return _upload_response(await self.domain.upload_codes(first.book_id, first.request_id, code_lists()))

    async def GetBookStats(self, request, context):
        # Admin only: the counts come from the ledger's internal (admin) method.
        return _stats(request.id, await self.domain.book_stats(request.id))
