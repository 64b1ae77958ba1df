"""The coupon ledger's changes: one transaction each, rules from rules.py, SQL through the repository."""

import datetime as dt
import hashlib
import random
import uuid
from collections.abc import Awaitable, Callable

from kernel.context import Principal
from kernel.directory import Directory
from kernel.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, PermissionDenied
from services.redemption import results, rules
from services.redemption.repository import BookRules, CouponRow, HistoryEvent, RedemptionRepository, Stamp
from services.redemption.results import AddCodesResult, BulkAssignResult, Coupon, LockResult, RedeemResult, UserCodes

MAX_CODES_PER_CALL = 100_000
MAX_BULK_USERS = 10_000
# Random points for picking codes; the keys themselves are drawn by PostgreSQL at insert.
_random = random.SystemRandom()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _busy(code: str) -> Aborted:
    return Aborted(
        f"Concurrent operation on coupon {code}; retry.", reason="CONCURRENT_OPERATION", metadata={"code": code}
    )


class RedemptionDomain:
    def __init__(self, repository: RedemptionRepository, directory: Directory):
        self.repo = repository
        self.directory = directory  # auth's accounts: codes go only to existing, active users

    async def _once(self, conn, scope: str, request_id: str, parts: tuple, kind: type, run: Callable[[], Awaitable]):
        """Runs `run` once per (scope, request_id), in the caller's transaction; a retry gets the first answer."""

        async def replay(stored: bytes):
            return results.decode(kind, stored)

        return await self.repo.idempotency.once(conn, scope, request_id, parts, run, results.encode, replay)

    # one coupon: advisory lock, row lock, rules, change, history, all in one transaction

    async def _on_coupon(
        self,
        caller: Principal,
        method: str,
        code: str,
        request_id: str,
        parts: tuple,
        kind: type,
        change: Callable[..., Awaitable],
    ):
        code = rules.check_code(code)
        async with self.repo.transaction() as conn:
            if not await self.repo.try_lock_code(conn, code):
                await self._refuse_busy(conn, caller, code)

            async def run():
                found = await self.repo.coupon_for_update(conn, code)
                if found is None or not (caller.is_admin or found[0].user_id == caller.user_id):
                    raise rules.coupon_not_found(code)
                row, book = found
                if rules.lock_expired(row):
                    row = await self._expire_lock(conn, caller, row, request_id)
                return await change(conn, row, book)

            return await self._once(conn, f"{method}:{caller.user_id}", request_id, (code, *parts), kind, run)

    async def _refuse_busy(self, conn, caller: Principal, code: str):
        """ABORTED to retry; but a user asking about a code that is not theirs learns only NOT_FOUND."""
        row = await self.repo.coupon(conn, code)
        if row is None or not (caller.is_admin or row.user_id == caller.user_id):
            raise rules.coupon_not_found(code)
        raise _busy(code)

    async def _expire_lock(self, conn, caller: Principal, row: CouponRow, request_id: str) -> CouponRow:
        """Clears a lock whose time is up and records that it expired (kept only if the write goes on)."""
        return await self.repo.clear_lock(conn, row.code, Stamp("LOCK_EXPIRED_EVENT", caller.actor, request_id))

    async def _record(
        self, conn, caller: Principal, rows: list[CouponRow], event: str, request_id: str, distribution_id: str = ""
    ) -> None:
        await self.repo.append_history(
            conn,
            [
                HistoryEvent(row.code, row.book_id, event, row.user_id, caller.actor, request_id, distribution_id)
                for row in rows
            ],
        )

    async def lock(self, caller: Principal, code: str, request_id: str = "") -> LockResult:
        async def change(conn, row: CouponRow, book: BookRules) -> LockResult:
            rules.check_book_open(book, "lock", _now())
            rules.check_lockable(row)
            locked = await self.repo.lock(
                conn,
                row.code,
                str(uuid.uuid4()),
                book.lock_ttl_seconds,
                Stamp("LOCKED_EVENT", caller.actor, request_id),
            )
            if locked.lock_id is None or locked.lock_expires_at is None:  # both set by the statement
                raise RuntimeError(f"coupon {locked.code} came back from its lock without one")
            return LockResult(Coupon.of(locked), locked.lock_id, locked.lock_expires_at)

        return await self._on_coupon(caller, "LockCoupon", code, request_id, (), LockResult, change)

    async def unlock(self, caller: Principal, code: str, request_id: str = "") -> Coupon:
        async def change(conn, row: CouponRow, book: BookRules) -> Coupon:
            rules.check_unlockable(row)
            unlocked = await self.repo.clear_lock(conn, row.code, Stamp("UNLOCKED_EVENT", caller.actor, request_id))
            return Coupon.of(unlocked)

        return await self._on_coupon(caller, "UnlockCoupon", code, request_id, (), Coupon, change)

    async def redeem(self, caller: Principal, code: str, lock_id: str = "", request_id: str = "") -> RedeemResult:
        if lock_id:
            lock_id = rules.check_uuid(lock_id, "lock_id", "a lock id from LockCoupon")

        async def change(conn, row: CouponRow, book: BookRules) -> RedeemResult:
            rules.check_book_open(book, "redeem", _now())
            rules.check_redeemable(row, lock_id)
            redeemed = await self.repo.redeem(conn, row.code, Stamp("REDEEMED_EVENT", caller.actor, request_id))
            if redeemed is None:  # the conditional update is the last word on the count; never seen under the locks
                raise _busy(row.code)
            return RedeemResult(Coupon.of(redeemed), redeemed.max_redemptions - redeemed.redemption_count)

        return await self._on_coupon(caller, "RedeemCoupon", code, request_id, (lock_id,), RedeemResult, change)

    async def assign(self, caller: Principal, code: str, user_id: str, request_id: str = "") -> Coupon:
        """Admin: gives this AVAILABLE code to the user."""
        user_id = rules.check_uuid(user_id, "user_id", "a user id")
        await self.directory.check_assignable([user_id])

        async def change(conn, row: CouponRow, book: BookRules) -> Coupon:
            rules.check_book_open(book, "assign", _now())
            rules.check_assignable(row)
            await self._reserve(conn, book, {user_id: 1})
            assigned = await self.repo.assign(conn, [row.code], [user_id])
            await self._record(conn, caller, assigned, "ASSIGNED_EVENT", request_id)
            return Coupon.of(assigned[0])

        return await self._on_coupon(caller, "AssignCoupon", code, request_id, (user_id,), Coupon, change)

    # random and bulk assignment: codes are picked, so their row locks (SKIP LOCKED) serialize them

    async def _reserve(self, conn, book: BookRules, counts: dict[str, int]) -> None:
        """Counts the codes into each user's holding atomically, or refuses with the numbers."""
        fitted = await self.repo.reserve_holdings(conn, book.book_id, counts, book.max_assignments_per_user)
        refused = sorted(set(counts) - set(fitted))
        if refused:
            held = await self.repo.holdings(conn, book.book_id, refused)
            raise rules.assignment_limit(
                refused[0], held.get(refused[0], 0), book.max_assignments_per_user, counts[refused[0]]
            )

    async def _open_book(self, conn, book_id: str) -> BookRules:
        book = await self.repo.rules(conn, book_id)
        if book is None:
            raise rules.book_not_found(book_id)
        rules.check_book_open(book, "assign", _now())
        return book

    async def _pick(self, conn, book: BookRules, count: int) -> list[str]:
        """`count` uniformly random AVAILABLE codes of the book, row-locked; refuses a shortfall with numbers."""
        codes = await self.repo.pick_available(conn, book.book_id, _random.random(), count)
        if len(codes) == count:
            return codes
        available = await self.repo.count_available(conn, book.book_id)
        if available >= count:  # the rest are being assigned by concurrent calls right now
            raise Aborted(
                f"Codes of book {book.book_id} are being assigned concurrently; retry.",
                reason="CONCURRENT_OPERATION",
                metadata={"book_id": book.book_id},
            )
        if available == 0:
            raise FailedPrecondition(
                f"Book {book.book_id} has no available codes.",
                reason="NO_CODES_AVAILABLE",
                metadata={"book_id": book.book_id, "available": 0, "needed": count},
            )
        raise FailedPrecondition(
            f"Book {book.book_id} has {available} available codes, the distribution needs {count}.",
            reason="INSUFFICIENT_CODES",
            metadata={"book_id": book.book_id, "available": available, "needed": count},
        )

    async def assign_random(self, caller: Principal, book_id: str, user_id: str, request_id: str = "") -> Coupon:
        book_id = rules.check_uuid(book_id, "book_id", "a book id")
        if user_id in ("", "me"):
            user_id = caller.user_id
        user_id = rules.check_uuid(user_id, "user_id", 'a user id or "me"')
        if not caller.is_admin and user_id != caller.user_id:
            raise PermissionDenied("A user may only assign coupons to themself.", reason="NOT_YOUR_ACCOUNT")
        if user_id != caller.user_id:  # a person's own verified token already proves their account is live
            await self.directory.check_assignable([user_id])
        async with self.repo.transaction() as conn:

            async def run() -> Coupon:
                book = await self._open_book(conn, book_id)
                if not caller.is_admin:
                    rules.check_self_claim(book)
                await self._reserve(conn, book, {user_id: 1})
                assigned = await self.repo.assign(conn, await self._pick(conn, book, 1), [user_id])
                await self._record(conn, caller, assigned, "ASSIGNED_EVENT", request_id)
                return Coupon.of(assigned[0])

            return await self._once(
                conn, f"AssignRandomCoupon:{caller.user_id}", request_id, (book_id, user_id), Coupon, run
            )

    async def bulk_assign(
        self, caller: Principal, book_id: str, counts: list[tuple[str, int]], distribution_id: str, request_id: str = ""
    ) -> BulkAssignResult:
        """Admin (pools): random codes for many users in one transaction, all or nothing."""
        book_id = rules.check_uuid(book_id, "book_id", "a book id")
        wanted = _bulk_counts(counts)
        needed = sum(wanted.values())
        await self.directory.check_assignable(list(wanted))
        async with self.repo.transaction() as conn:

            async def run() -> BulkAssignResult:
                book = await self._open_book(conn, book_id)
                available = await self.repo.count_available(conn, book_id)
                if available < needed:
                    raise FailedPrecondition(
                        f"Book {book_id} has {available} available codes, the distribution needs {needed}.",
                        reason="INSUFFICIENT_CODES",
                        metadata={"book_id": book_id, "available": available, "needed": needed},
                    )
                await self._reserve(conn, book, wanted)
                codes = await self._pick(conn, book, needed)
                _random.shuffle(codes)  # which user gets which of the picked codes is random too
                users = [user for user, count in wanted.items() for _ in range(count)]
                assigned = await self.repo.assign(conn, codes, users)
                await self._record(conn, caller, assigned, "ASSIGNED_EVENT", request_id, distribution_id)
                by_user: dict[str, list[str]] = {user: [] for user in wanted}
                for code, user in zip(codes, users, strict=True):
                    by_user[user].append(code)
                return BulkAssignResult([UserCodes(u, c) for u, c in by_user.items()], needed)

            return await self._once(
                conn,
                f"BulkAssign:{caller.user_id}",
                request_id,
                (book_id, distribution_id, sorted(wanted.items())),
                BulkAssignResult,
                run,
            )

    # internal: the control plane (books) feeding the ledger

    async def put_rules(self, book: BookRules) -> BookRules:
        book = rules.normalize_rules(book)
        async with self.repo.transaction() as conn:
            return await self.repo.put_rules(conn, book)

    async def add_codes(
        self, caller: Principal, book_id: str, codes: list[str], request_id: str = ""
    ) -> AddCodesResult:
        book_id = rules.check_uuid(book_id, "book_id", "a book id")
        if not codes:
            raise InvalidArgument.field("codes", "must hold at least one code")
        if len(codes) > MAX_CODES_PER_CALL:
            raise InvalidArgument.field(
                "codes", f"at most {MAX_CODES_PER_CALL} codes per call; send batches", reason="BATCH_TOO_LARGE"
            )
        codes = [rules.check_code(code, f"codes[{index}]") for index, code in enumerate(codes)]
        digest = hashlib.sha256("\n".join(codes).encode()).hexdigest()
        async with self.repo.transaction() as conn:

            async def run() -> AddCodesResult:
                if await self.repo.rules(conn, book_id) is None:
                    raise rules.book_not_found(book_id)
                inserted = await self.repo.add_codes(conn, book_id, codes)
                existing = list(dict.fromkeys(code for code in codes if code not in inserted))
                return AddCodesResult(len(inserted), existing)

            return await self._once(
                conn, f"AddCodes:{caller.user_id}", request_id, (book_id, digest), AddCodesResult, run
            )


def _bulk_counts(counts: list[tuple[str, int]]) -> dict[str, int]:
    """{user: count} in request order; refuses empty, repeated, malformed or non-positive entries."""
    if not counts:
        raise InvalidArgument.field("assignments", "must name at least one user")
    if len(counts) > MAX_BULK_USERS:
        raise InvalidArgument.field("assignments", f"at most {MAX_BULK_USERS} users per call", reason="BATCH_TOO_LARGE")
    wanted: dict[str, int] = {}
    violations = []
    for index, (user_id, count) in enumerate(counts):
        field = f"assignments[{index}]"
        if not rules.is_uuid(user_id):
            violations.append(FieldViolation(f"{field}.user_id", "must be a user id (a UUID)"))
        elif str(uuid.UUID(user_id)) in wanted:
            violations.append(FieldViolation(f"{field}.user_id", "appears more than once"))
        elif count < 1:
            violations.append(FieldViolation(f"{field}.count", "must be at least 1"))
        else:
            wanted[str(uuid.UUID(user_id))] = count
    if violations:
        raise InvalidArgument(violations)
    if sum(wanted.values()) > MAX_CODES_PER_CALL:
        raise InvalidArgument.field(
            "assignments", f"at most {MAX_CODES_PER_CALL} codes per call", reason="BATCH_TOO_LARGE"
        )
    return wanted
