"""The coupon ledger's changes: one transaction each, rules from rules.py, SQL through the repository.

The hot operations (lock, unlock, redeem, assign one code, assign a random code) are one server-side
function call each; batch work (bulk assignment, adding codes, rules) runs Python-driven transactions.
"""

import hashlib
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kernel import idempotency, money
from kernel.context import Principal
from kernel.directory import Directory
from kernel.errors import FieldViolation, InvalidArgument, PermissionDenied
from services.redemption import results, rules
from services.redemption.model import BookRules, Change, Outcome
from services.redemption.repository import RedemptionRepository
from services.redemption.results import AddCodesResult, BulkAssignResult, Coupon, LockResult, RedeemResult, UserCodes

MAX_CODES_PER_CALL = 100_000
MAX_BULK_USERS = 10_000


@dataclass(frozen=True)
class OrderInput:
    """The order as a caller gives it (checked by rules.check_order): amount and currency as text."""

    reference: str = ""
    amount: str = ""
    currency: str = ""


NO_ORDER = OrderInput()
# Random points for picking codes; the keys themselves are drawn by PostgreSQL at insert.
_random = random.SystemRandom()


ACTIONS = {Change.LOCK: "lock", Change.UNLOCK: "unlock", Change.ASSIGN: "assign"}


def _request_hash(request_id: str, parts: tuple) -> bytes:
    """The arguments' fingerprint when the call has a request_id (checked here, before the database)."""
    if not request_id:
        return b""
    idempotency.check_request_id(request_id)
    return idempotency.request_hash(parts)


class RedemptionDomain:
    def __init__(self, repository: RedemptionRepository, directory: Directory):
        self.repo = repository
        self.directory = directory  # auth's accounts: codes go only to existing, active users

    async def _once(self, conn, scope: str, request_id: str, parts: tuple, kind: type, run: Callable[[], Awaitable]):
        """Runs `run` once per (scope, request_id), in the caller's transaction; a retry gets the first answer."""

        async def replay(stored: bytes):
            return results.decode(kind, stored)

        return await self.repo.idempotency.once(conn, scope, request_id, parts, run, results.encode, replay)

    # one coupon: redemption.change_coupon takes the advisory lock, checks, writes and logs in one call

    async def _change(
        self,
        caller: Principal,
        change: Change,
        method: str,
        code: str,
        request_id: str,
        parts: tuple = (),
        target: str | None = None,
        lock_id: str | None = None,
    ) -> Outcome:
        code = rules.check_code(code)
        outcome = await self.repo.change_code(
            change,
            code,
            None if caller.is_admin else caller.user_id,
            caller.actor,
            f"{method}:{caller.user_id}",
            request_id,
            _request_hash(request_id, (code, *parts)),
            target=target,
            lock_id=lock_id,
        )
        return _accepted(outcome, ACTIONS[change])

    async def lock(self, caller: Principal, code: str, request_id: str = "") -> LockResult:
        outcome = await self._change(caller, Change.LOCK, "LockCoupon", code, request_id, lock_id=str(uuid.uuid4()))
        locked = outcome.coupon()
        if locked.lock_id is None or locked.lock_expires_at is None:  # both set by the function
            raise RuntimeError(f"coupon {locked.code} came back from its lock without one")
        return LockResult(Coupon.of(locked), locked.lock_id, locked.lock_expires_at)

    async def unlock(self, caller: Principal, code: str, request_id: str = "") -> Coupon:
        return Coupon.of((await self._change(caller, Change.UNLOCK, "UnlockCoupon", code, request_id)).coupon())

    async def redeem(
        self, caller: Principal, code: str, lock_id: str = "", request_id: str = "", order: OrderInput = NO_ORDER
    ) -> RedeemResult:
        """Redeems the code (the holder's, or a shared one) for the order; answers the discount to apply."""
        return await self._redeem(caller, code, lock_id, request_id, order, validate=False)

    async def validate(
        self, caller: Principal, code: str, lock_id: str = "", order: OrderInput = NO_ORDER
    ) -> RedeemResult:
        """What redeem would answer now, changing nothing: the discount, or redeem's refusal as the error."""
        return await self._redeem(caller, code, lock_id, "", order, validate=True)

    async def _redeem(
        self, caller: Principal, code: str, lock_id: str, request_id: str, given: OrderInput, validate: bool
    ) -> RedeemResult:
        code = rules.check_code(code)
        order = rules.check_order(given.reference, given.amount, given.currency)
        if lock_id:
            lock_id = rules.check_uuid(lock_id, "lock_id", "a lock id from LockCoupon")
        parts: tuple = (code, lock_id)  # as before orders existed, so a retry across the upgrade replays
        if given != NO_ORDER:
            parts += (order.reference, money.text(order.amount), order.currency)
        outcome = await self.repo.redeem(
            code,
            None if caller.is_admin else caller.user_id,
            caller.user_id,
            lock_id or None,
            order,
            caller.actor,
            f"RedeemCoupon:{caller.user_id}",
            request_id,
            _request_hash(request_id, parts),
            validate=validate,
        )
        redeemed = _accepted(outcome, "redeem")
        left = _remaining(redeemed) - (1 if validate else 0)
        currency = order.currency if redeemed.discount is not None else ""
        return RedeemResult(Coupon.of(redeemed.coupon()), max(left, 0), redeemed.discount, currency)

    async def rollback(
        self, caller: Principal, code: str, order_reference: str, reason: str, request_id: str = ""
    ) -> RedeemResult:
        """Admin or a checkout service: undoes the code's redemption for the order; answers the coupon now and
        the discount that redemption had given."""
        code = rules.check_code(code)
        order_reference, reason = rules.check_rollback(order_reference, reason)
        outcome = await self.repo.rollback(
            code,
            order_reference,
            reason,
            caller.actor,
            f"RollbackRedemption:{caller.user_id}",
            request_id,
            _request_hash(request_id, (code, order_reference, reason)),
        )
        undone = _accepted(outcome, "roll back")
        return RedeemResult(Coupon.of(undone.coupon()), _remaining(undone), undone.discount)

    async def assign(self, caller: Principal, code: str, user_id: str, request_id: str = "") -> Coupon:
        """Admin: gives this AVAILABLE code to the user."""
        user_id = rules.check_uuid(user_id, "user_id", "a user id")
        await self.directory.check_assignable([user_id])
        assigned = await self._change(caller, Change.ASSIGN, "AssignCoupon", code, request_id, (user_id,), user_id)
        return Coupon.of(assigned.coupon())

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
        found = await self.repo.book_refusal(conn, book_id)
        if found is None:
            raise rules.book_not_found(book_id)
        book, refusal = found
        if book.shared:
            raise rules.book_shared(book.book_id, book.book_name)
        if refusal:
            raise rules.book_closed(refusal, book.book_id, book.valid_from, book.valid_until, "assign", book.book_name)
        return book

    async def _pick(self, conn, book: BookRules, count: int) -> list[str]:
        """`count` uniformly random AVAILABLE codes of the book, row-locked; refuses a shortfall with numbers."""
        codes = await self.repo.pick_available(conn, book.book_id, _random.random(), count)
        if len(codes) == count:
            return codes
        available = await self.repo.count_available(conn, book.book_id)
        if available >= count:  # the rest are being assigned by concurrent calls right now
            raise rules.book_busy(book.book_id, book.book_name)
        raise rules.too_few_codes(book.book_id, available, count, book.book_name)

    async def assign_random(self, caller: Principal, book_id: str, user_id: str, request_id: str = "") -> Coupon:
        book_id = rules.check_uuid(book_id, "book_id", "a book id")
        if user_id in ("", "me"):
            user_id = caller.user_id
        user_id = rules.check_uuid(user_id, "user_id", 'a user id or "me"')
        if not caller.is_admin and user_id != caller.user_id:
            raise PermissionDenied("A user may only assign coupons to themself.", reason="NOT_YOUR_ACCOUNT")
        if user_id != caller.user_id:  # a person's own verified token already proves their account is live
            await self.directory.check_assignable([user_id])
        outcome = await self.repo.assign_random(
            book_id,
            user_id,
            not caller.is_admin,
            _random.random(),
            caller.actor,
            f"AssignRandomCoupon:{caller.user_id}",
            request_id,
            _request_hash(request_id, (book_id, user_id)),
        )
        return Coupon.of(_accepted(outcome, "assign").coupon())

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
                    raise rules.too_few_codes(book_id, available, needed, book.book_name)
                await self._reserve(conn, book, wanted)
                codes = await self._pick(conn, book, needed)
                _random.shuffle(codes)  # which user gets which of the picked codes is random too
                users = [user for user, count in wanted.items() for _ in range(count)]
                assigned = await self.repo.assign(conn, codes, users, caller.actor, request_id, distribution_id)
                if assigned != needed:  # cannot happen: the picked codes are row-locked AVAILABLE ones
                    raise RuntimeError(f"assigned {assigned} of {needed} picked codes")
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


def _accepted(outcome: Outcome, action: str) -> Outcome:
    """The function's answer when it changed the coupon, or the refusal it answered, as its error."""
    if outcome.outcome != "OK":
        raise rules.refusal(outcome, action)
    return outcome


def _remaining(redeemed: Outcome) -> int:
    """Redemptions the caller has left on the code: a shared code's within both its caps."""
    left = (redeemed.max_redemptions or 0) - (redeemed.redemption_count or 0)
    if redeemed.shared:
        left = min(left, (redeemed.user_limit or 0) - (redeemed.user_redemptions or 0))
    return max(left, 0)


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
