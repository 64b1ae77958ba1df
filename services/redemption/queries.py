"""Reads of the ledger: a coupon, a user's or a book's coupons, history, counts. Keyset-paged.

A list's total_size is counted once, with its first page, and carried in the page token
(paging.decode_counted_cursor, next_counted_page): paging
through a book of a million codes does not count them again per page, and every page of one listing
reports the same total (a snapshot, as AIP-132 allows; a new listing counts again).
"""

from kernel import paging
from kernel.context import Principal
from kernel.errors import InvalidArgument, PermissionDenied
from services.redemption import rules
from services.redemption.model import BookCounts, BookRules, HistoryRow
from services.redemption.repository import RedemptionRepository
from services.redemption.results import Coupon

MAX_USERS_PER_CALL = 10_000


class LedgerQueries:
    def __init__(self, repository: RedemptionRepository):
        self.repo = repository

    async def get(self, caller: Principal, code: str) -> Coupon:
        """A user reads their own coupons and shared codes (which anyone may redeem), nothing else."""
        code = rules.check_code(code)
        async with self.repo.transaction() as conn:
            row = await self.repo.coupon(conn, code)
        if row is None or not (caller.is_admin or row.shared or row.user_id == caller.user_id):
            raise rules.coupon_not_found(code)
        return Coupon.of(row)

    async def list_user_coupons(
        self, caller: Principal, user_id: str, state: str | None, book_id: str, page_size: int, page_token: str
    ) -> tuple[list[Coupon], str, int]:
        if user_id in ("", "me"):
            user_id = caller.user_id
        user_id = rules.check_uuid(user_id, "user_id", 'a user id or "me"')
        if not caller.is_admin and user_id != caller.user_id:
            raise PermissionDenied("A user may only list their own coupons.", reason="NOT_YOUR_ACCOUNT")
        of_book = rules.check_uuid(book_id, "book_id", "a book id") if book_id else None
        size = paging.page_size(page_size)
        after, total = paging.decode_counted_cursor(page_token, {"code": str})
        async with self.repo.transaction() as conn:
            rows = await self.repo.list_coupons(
                conn, size + 1, user_id=user_id, book_id=of_book, state=state, after=after
            )
            if total is None:
                total = await self.repo.count_coupons(conn, user_id=user_id, book_id=of_book, state=state)
        rows, token = paging.next_counted_page(rows, size, lambda row: {"code": row.code}, total)
        return [Coupon.of(row) for row in rows], token, total

    async def list_book_coupons(
        self, book_id: str, state: str | None, page_size: int, page_token: str
    ) -> tuple[list[Coupon], str, int]:
        book_id = rules.check_uuid(book_id, "book_id", "a book id")
        size = paging.page_size(page_size)
        after, total = paging.decode_counted_cursor(page_token, {"state": str, "code": str})
        async with self.repo.transaction() as conn:
            if await self.repo.rules(conn, book_id) is None:
                raise rules.book_not_found(book_id)
            rows = await self.repo.list_coupons(conn, size + 1, book_id=book_id, state=state, after=after)
            if total is None:
                total = await self.repo.count_coupons(conn, book_id=book_id, state=state)
        rows, token = paging.next_counted_page(rows, size, lambda row: {"state": row.state, "code": row.code}, total)
        return [Coupon.of(row) for row in rows], token, total

    async def coupon_history(self, code: str, page_size: int, page_token: str) -> tuple[list[HistoryRow], str, int]:
        code = rules.check_code(code)

        async def missing(conn) -> Exception | None:
            return rules.coupon_not_found(code) if await self.repo.coupon(conn, code) is None else None

        return await self._history(missing, page_size, page_token, code=code)

    async def book_history(self, book_id: str, page_size: int, page_token: str) -> tuple[list[HistoryRow], str, int]:
        book_id = rules.check_uuid(book_id, "book_id", "a book id")

        async def missing(conn) -> Exception | None:
            return rules.book_not_found(book_id) if await self.repo.rules(conn, book_id) is None else None

        return await self._history(missing, page_size, page_token, book_id=book_id)

    async def _history(self, missing, page_size: int, page_token: str, **subject) -> tuple[list[HistoryRow], str, int]:
        """One page of a code's or a book's history; NOT_FOUND (from missing(conn)) when the subject is unknown."""
        size = paging.page_size(page_size)
        after, total = paging.decode_counted_cursor(page_token, {"id": int})
        async with self.repo.transaction() as conn:
            if (error := await missing(conn)) is not None:
                raise error
            entries = await self.repo.list_history(conn, size + 1, after["id"] if after else 0, **subject)
            if total is None:
                total = await self.repo.count_history(conn, **subject)
        entries, token = paging.next_counted_page(entries, size, lambda entry: {"id": entry.id}, total)
        return entries, token, total

    # internal (books, pools)

    async def book_counts(self, book_id: str) -> BookCounts:
        book_id = rules.check_uuid(book_id, "book_id", "a book id")
        async with self.repo.transaction() as conn:
            if await self.repo.rules(conn, book_id) is None:
                raise rules.book_not_found(book_id)
            return await self.repo.book_counts(conn, book_id)

    async def assignment_counts(self, book_id: str, user_ids: list[str]) -> tuple[dict[str, int], int, BookRules]:
        book_id = rules.check_uuid(book_id, "book_id", "a book id")
        if len(user_ids) > MAX_USERS_PER_CALL:
            raise InvalidArgument.field("user_ids", f"at most {MAX_USERS_PER_CALL} per call", reason="BATCH_TOO_LARGE")
        users = [rules.check_uuid(u, f"user_ids[{i}]", "a user id") for i, u in enumerate(user_ids)]
        async with self.repo.transaction() as conn:
            book = await self.repo.rules(conn, book_id)
            if book is None:
                raise rules.book_not_found(book_id)
            held = await self.repo.holdings(conn, book_id, users)
            available = await self.repo.count_available(conn, book_id)
        return {user: held.get(user, 0) for user in users}, available, book
