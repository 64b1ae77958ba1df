"""The state machine's rules: which transition a coupon and its book allow, and why not. Plain Python.

Every refusal names the coupon's state and the rule, with a stable reason.
"""

import datetime as dt
import uuid

from kernel.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from kernel.validation import has_control_characters
from services.redemption.repository import BookRules, CouponRow

MAX_CODE_LENGTH = 128
DEFAULT_LOCK_TTL_SECONDS = 300
MAX_LOCK_TTL_SECONDS = 3600


def _when(value: dt.datetime | None) -> str:
    if value is None:  # never for a live lock or a redeemed coupon, which have their times
        return "an unknown time"
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _article(state: str) -> str:
    return "an" if state[0] in "AEIOU" else "a"


def _refused(action: str, row: CouponRow, state: str, rule: str, reason: str, **metadata) -> FailedPrecondition:
    return FailedPrecondition(
        f"Cannot {action} {_article(state)} {state} coupon: {rule}.",
        reason=reason,
        metadata={"code": row.code, "state": state, **metadata},
        violations=[PreconditionViolation(reason, f"coupon:{row.code}", rule)],
    )


def state_of(row: CouponRow) -> str:
    return "LOCKED" if row.locked else row.state


def lock_expired(row: CouponRow) -> bool:
    return row.lock_expires_at is not None and not row.locked


def coupon_not_found(code: str) -> NotFound:
    # The one answer for a missing code and for someone else's code: no enumeration of codes.
    return NotFound("coupon", code, reason="COUPON_NOT_FOUND")


def book_not_found(book_id: str) -> NotFound:
    return NotFound(
        "book", book_id, reason="BOOK_NOT_FOUND", message=f"Book {book_id} was not found in the coupon ledger."
    )


# validation


def check_code(code: str, field: str = "code") -> str:
    """The code as the ledger stores it: codes are upper case everywhere, so any letter case names the coupon."""
    if not code:
        raise InvalidArgument.field(field, "is required")
    if len(code) > MAX_CODE_LENGTH or code != code.strip() or has_control_characters(code):
        raise InvalidArgument.field(
            field,
            f"must be a coupon code of at most {MAX_CODE_LENGTH} characters "
            "without surrounding spaces or control characters",
            reason="INVALID_CODE",
        )
    return code.upper()


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except (ValueError, AttributeError, TypeError):
        return False


def check_uuid(value: str, field: str, what: str) -> str:
    """Returns the canonical form of a required UUID field."""
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not is_uuid(value):
        raise InvalidArgument.field(field, f"must be {what} (a UUID)", reason="INVALID_UUID")
    return str(uuid.UUID(value))


def normalize_rules(rules: BookRules) -> BookRules:
    """Checks a book's rules as books sends them; fills the defaults (lock TTL 300 s, single use = 1)."""
    violations = []
    book_id = rules.book_id
    if not is_uuid(book_id):
        violations.append(FieldViolation("rules.book_id", "must be a book id (a UUID)"))
    else:
        book_id = str(uuid.UUID(book_id))
    max_redemptions = rules.max_redemptions if rules.allow_multi_redemption else 1
    if max_redemptions < 1:
        violations.append(
            FieldViolation("rules.max_redemptions_per_user", "must be at least 1 for a multi-redemption book")
        )
    if rules.max_assignments_per_user < 0:
        violations.append(FieldViolation("rules.max_assignments_per_user", "must not be negative (0: no limit)"))
    lock_ttl = rules.lock_ttl_seconds or DEFAULT_LOCK_TTL_SECONDS
    if not 1 <= lock_ttl <= MAX_LOCK_TTL_SECONDS:
        violations.append(FieldViolation("rules.lock_ttl_seconds", f"must be 1..{MAX_LOCK_TTL_SECONDS} (0: 300)"))
    if rules.valid_from and rules.valid_until and rules.valid_from >= rules.valid_until:
        violations.append(FieldViolation("rules.valid_until", "must be after valid_from"))
    if rules.version < 0:
        violations.append(FieldViolation("rules.version", "must not be negative"))
    if violations:
        raise InvalidArgument(violations)
    return BookRules(
        book_id=book_id,
        allow_multi_redemption=rules.allow_multi_redemption,
        max_redemptions=max_redemptions,
        max_assignments_per_user=rules.max_assignments_per_user,
        lock_ttl_seconds=lock_ttl,
        valid_from=rules.valid_from,
        valid_until=rules.valid_until,
        archived=rules.archived,
        version=rules.version,
        allow_self_claim=rules.allow_self_claim,
    )


# the book


def check_book_open(rules: BookRules, action: str, now: dt.datetime) -> None:
    """An archived book, or one outside its validity window, refuses assignment, locking and redemption."""
    subject = f"book:{rules.book_id}"
    if rules.archived:
        raise FailedPrecondition(
            f"Cannot {action} a coupon of book {rules.book_id}: the book is archived.",
            reason="BOOK_ARCHIVED",
            metadata={"book_id": rules.book_id},
            violations=[PreconditionViolation("BOOK_ARCHIVED", subject, "the book is archived")],
        )
    if rules.valid_from is not None and now < rules.valid_from:
        raise FailedPrecondition(
            f"Cannot {action} a coupon of book {rules.book_id} before {_when(rules.valid_from)}: "
            "the book is not valid yet.",
            reason="BOOK_NOT_YET_VALID",
            metadata={"book_id": rules.book_id, "valid_from": _when(rules.valid_from)},
            violations=[PreconditionViolation("BOOK_NOT_YET_VALID", subject, "the book is not valid yet")],
        )
    if rules.valid_until is not None and now >= rules.valid_until:
        raise FailedPrecondition(
            f"Cannot {action} a coupon of book {rules.book_id}: the book expired at {_when(rules.valid_until)}.",
            reason="BOOK_EXPIRED",
            metadata={"book_id": rules.book_id, "valid_until": _when(rules.valid_until)},
            violations=[PreconditionViolation("BOOK_EXPIRED", subject, "the book's validity window has ended")],
        )


def check_self_claim(rules: BookRules) -> None:
    """A USER takes codes of a book only when the book says so; an ADMIN hands out any book's codes."""
    if not rules.allow_self_claim:
        raise PermissionDenied(
            f"Book {rules.book_id} does not allow self-service claims (its rule allow_self_claim is off); "
            "an administrator hands its codes out.",
            reason="SELF_CLAIM_NOT_ALLOWED",
        )


def assignment_limit(user_id: str, held: int, limit: int, wanted: int = 1) -> FailedPrecondition:
    more = "another" if wanted == 1 else f"{wanted} more"
    return FailedPrecondition(
        f"Cannot assign {more} code: user {user_id} holds {held} of at most {limit} codes of this book.",
        reason="ASSIGNMENT_LIMIT_REACHED",
        metadata={"user_id": user_id, "held": held, "max_assignments_per_user": limit, "requested": wanted},
        violations=[
            PreconditionViolation(
                "ASSIGNMENT_LIMIT_REACHED",
                f"user:{user_id}",
                f"holds {held} of at most {limit} codes; {wanted} more requested",
            )
        ],
    )


# transitions of one coupon


def check_assignable(row: CouponRow) -> None:
    if row.state != "AVAILABLE":
        raise _refused(
            "assign", row, state_of(row), f"it already has a holder (user {row.user_id})", "COUPON_NOT_AVAILABLE"
        )


def _check_redemptions_left(action: str, row: CouponRow) -> None:
    if row.redemption_count < row.max_redemptions:
        return
    if row.max_redemptions == 1:
        raise _refused(
            action,
            row,
            "REDEEMED",
            f"it is single-use and was redeemed at {_when(row.last_redeemed_at)}",
            "COUPON_ALREADY_REDEEMED",
        )
    raise _refused(
        action,
        row,
        "REDEEMED",
        f"its holder has used all {row.max_redemptions} redemptions this book allows per user",
        "REDEMPTION_LIMIT_REACHED",
        redemption_count=row.redemption_count,
        max_redemptions=row.max_redemptions,
    )


def _check_held(action: str, row: CouponRow) -> None:
    if row.state == "AVAILABLE":
        raise _refused(action, row, "AVAILABLE", "it has no holder; assign it first", "COUPON_NOT_ASSIGNED")


def check_lockable(row: CouponRow) -> None:
    _check_held("lock", row)
    if row.locked:
        raise FailedPrecondition(
            f"Coupon {row.code} is already locked until {_when(row.lock_expires_at)}.",
            reason="COUPON_ALREADY_LOCKED",
            metadata={"code": row.code, "state": "LOCKED", "lock_expire_time": _when(row.lock_expires_at)},
            violations=[PreconditionViolation("COUPON_ALREADY_LOCKED", f"coupon:{row.code}", "already locked")],
        )
    _check_redemptions_left("lock", row)


def check_unlockable(row: CouponRow) -> None:
    if not row.locked:
        raise _refused("unlock", row, state_of(row), "it is not locked", "COUPON_NOT_LOCKED")


def check_redeemable(row: CouponRow, lock_id: str) -> None:
    """A live lock is passed only with its own lock id (the checkout that locked the coupon)."""
    _check_held("redeem", row)
    _check_redemptions_left("redeem", row)
    if not row.locked or lock_id == row.lock_id:
        return
    until = _when(row.lock_expires_at)
    if not lock_id:
        raise FailedPrecondition(
            f"Coupon {row.code} is locked until {until}: redeem with its lock id or unlock it first.",
            reason="COUPON_LOCKED",
            metadata={"code": row.code, "state": "LOCKED", "lock_expire_time": until},
            violations=[PreconditionViolation("COUPON_LOCKED", f"coupon:{row.code}", "locked by a checkout")],
        )
    raise FailedPrecondition(
        f"Coupon {row.code} is locked until {until} by another checkout: the lock id does not match.",
        reason="WRONG_LOCK_ID",
        metadata={"code": row.code, "state": "LOCKED", "lock_expire_time": until},
        violations=[PreconditionViolation("WRONG_LOCK_ID", f"coupon:{row.code}", "lock id does not match")],
    )
