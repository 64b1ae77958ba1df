"""The state machine's rules: what a coupon and its book allow, and why not, in words.

Which rule refuses is decided where the change is made, atomically with it: the server-side functions of
migration 0004 (redemption.change_coupon, redemption.assign_random, redemption.book_refusal) answer OK or
a reason. Here each reason becomes the error its caller reads: the coupon's state, the rule, a stable
reason and the numbers. Input checks and the book rules' own validation are here too. Plain Python.
"""

import datetime as dt
import decimal
import uuid

from kernel import money
from kernel.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from kernel.idempotency import request_id_reused
from kernel.validation import has_control_characters
from services.redemption.model import BookRules, CouponRow, CouponState, DiscountType, Order, Outcome

MAX_CODE_LENGTH = 128
MAX_ORDER_REFERENCE_LENGTH = 128
MAX_REASON_LENGTH = 500
MAX_BOOK_NAME_LENGTH = 200  # as books allows
DEFAULT_ROLLBACK_WINDOW_SECONDS = 7 * 24 * 3600
MAX_ROLLBACK_WINDOW_SECONDS = 90 * 24 * 3600
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
    return CouponState.LOCKED if row.locked else row.state


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


def check_order(reference: str, amount: str, currency: str) -> Order:
    """The order a redemption is for; an amount needs its currency and at most the currency's decimals."""
    violations = []
    if len(reference) > MAX_ORDER_REFERENCE_LENGTH or has_control_characters(reference):
        violations.append(
            FieldViolation(
                "order_reference", f"must be at most {MAX_ORDER_REFERENCE_LENGTH} characters without control characters"
            )
        )
    if (problem := money.currency_violation(currency, "currency")) and (amount or currency):
        violations.append(problem)
    elif currency and not amount:
        violations.append(FieldViolation("currency", "is given only with order_amount"))
    elif amount and (problem := money.amount_violation(amount, currency, "order_amount")):
        violations.append(problem)
    if violations:
        raise InvalidArgument(violations)
    if not amount:
        return Order(reference=reference)
    return Order(reference, decimal.Decimal(amount), currency, money.MINOR_UNITS[currency])


def check_rollback(order_reference: str, reason: str) -> tuple[str, str]:
    violations = []
    if not order_reference:
        violations.append(FieldViolation("order_reference", "is required: the order the redemption was made for"))
    elif len(order_reference) > MAX_ORDER_REFERENCE_LENGTH or has_control_characters(order_reference):
        violations.append(FieldViolation("order_reference", f"must be at most {MAX_ORDER_REFERENCE_LENGTH} characters"))
    reason = reason.strip()
    if not reason:
        violations.append(FieldViolation("reason", "is required"))
    elif len(reason) > MAX_REASON_LENGTH or has_control_characters(reason):
        violations.append(
            FieldViolation("reason", f"must be at most {MAX_REASON_LENGTH} characters without control characters")
        )
    if violations:
        raise InvalidArgument(violations)
    return order_reference, reason


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
    rollback_window = rules.rollback_window_seconds or DEFAULT_ROLLBACK_WINDOW_SECONDS
    if not 1 <= rollback_window <= MAX_ROLLBACK_WINDOW_SECONDS:
        violations.append(
            FieldViolation("rules.rollback_window_seconds", f"must be 1..{MAX_ROLLBACK_WINDOW_SECONDS} (0: 7 days)")
        )
    if rules.version < 0:
        violations.append(FieldViolation("rules.version", "must not be negative"))
    if rules.discount_type not in tuple(DiscountType):
        violations.append(FieldViolation("rules.discount_type", "must be a known discount type"))
    if (rules.discount_type or rules.currency) and money.currency_violation(rules.currency, "rules.currency"):
        violations.append(FieldViolation("rules.currency", "must be an ISO 4217 currency code with a discount"))
    if rules.shared and rules.max_redemptions_total < 1:
        violations.append(FieldViolation("rules.max_redemptions_total", "must be at least 1 for a shared book"))
    elif not rules.shared and rules.max_redemptions_total != 0:
        violations.append(FieldViolation("rules.max_redemptions_total", "must be 0 for a book of personal codes"))
    if len(rules.book_name) > MAX_BOOK_NAME_LENGTH or has_control_characters(rules.book_name):
        violations.append(
            FieldViolation("rules.book_name", f"at most {MAX_BOOK_NAME_LENGTH} characters, no control characters")
        )
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
        shared=rules.shared,
        max_redemptions_total=rules.max_redemptions_total,
        discount_type=rules.discount_type,
        percent_off=rules.percent_off,
        amount_off=rules.amount_off,
        max_discount=rules.max_discount,
        min_order_amount=rules.min_order_amount,
        currency=rules.currency,
        rollback_window_seconds=rollback_window,
        book_name=rules.book_name,
    )


# the book


def _book(book_id: str, name: str = "", start: str = "book") -> str:
    """How a message names a book: by the name people gave it where the ledger knows it, else by id."""
    return f"{start} {name!r}" if name else f"{start} {book_id}"


def book_closed(
    reason: str,
    book_id: str,
    valid_from: dt.datetime | None,
    valid_until: dt.datetime | None,
    action: str,
    name: str = "",
):
    """An archived book, or one outside its validity window (redemption.book_refusal's reasons)."""
    subject = f"book:{book_id}"
    if reason == "BOOK_ARCHIVED":
        return FailedPrecondition(
            f"Cannot {action} a coupon of {_book(book_id, name)}: the book is archived.",
            reason=reason,
            metadata={"book_id": book_id},
            violations=[PreconditionViolation(reason, subject, "the book is archived")],
        )
    if reason == "BOOK_NOT_YET_VALID":
        return FailedPrecondition(
            f"Cannot {action} a coupon of {_book(book_id, name)} before {_when(valid_from)}: the book is not valid "
            "yet.",
            reason=reason,
            metadata={"book_id": book_id, "valid_from": _when(valid_from)},
            violations=[PreconditionViolation(reason, subject, "the book is not valid yet")],
        )
    return FailedPrecondition(
        f"Cannot {action} a coupon of {_book(book_id, name)}: the book expired at {_when(valid_until)}.",
        reason="BOOK_EXPIRED",
        metadata={"book_id": book_id, "valid_until": _when(valid_until)},
        violations=[PreconditionViolation("BOOK_EXPIRED", subject, "the book's validity window has ended")],
    )


def self_claim_not_allowed(book_id: str, name: str = "") -> PermissionDenied:
    """A USER takes codes of a book only when the book says so; an ADMIN hands out any book's codes."""
    return PermissionDenied(
        f"{_book(book_id, name, 'Book')} does not allow self-service claims (its rule allow_self_claim is off); "
        "an administrator hands its codes out.",
        reason="SELF_CLAIM_NOT_ALLOWED",
    )


def book_shared(book_id: str, name: str = "") -> FailedPrecondition:
    return FailedPrecondition(
        f"{_book(book_id, name, 'Book')} holds shared codes, which have no holder: any signed-in user redeems "
        "them directly.",
        reason="BOOK_SHARED",
        metadata={"book_id": book_id},
        violations=[PreconditionViolation("BOOK_SHARED", f"book:{book_id}", "shared codes are not assigned")],
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


def coupon_busy(code: str) -> Aborted:
    return Aborted(
        f"Concurrent operation on coupon {code}; retry.", reason="CONCURRENT_OPERATION", metadata={"code": code}
    )


def book_busy(book_id: str, name: str = "") -> Aborted:
    return Aborted(
        f"Codes of {_book(book_id, name)} are being assigned concurrently; retry.",
        reason="CONCURRENT_OPERATION",
        metadata={"book_id": book_id},
    )


def too_few_codes(book_id: str, available: int, needed: int, name: str = "") -> FailedPrecondition:
    if available == 0:
        return FailedPrecondition(
            f"{_book(book_id, name, 'Book')} has no available codes.",
            reason="NO_CODES_AVAILABLE",
            metadata={"book_id": book_id, "available": 0, "needed": needed},
        )
    return FailedPrecondition(
        f"{_book(book_id, name, 'Book')} has {available} available codes, the distribution needs {needed}.",
        reason="INSUFFICIENT_CODES",
        metadata={"book_id": book_id, "available": available, "needed": needed},
    )


# refusals of one coupon's transitions


def _no_redemptions_left(action: str, row: CouponRow) -> FailedPrecondition:
    if row.max_redemptions == 1:
        return _refused(
            action,
            row,
            CouponState.REDEEMED,
            f"it is single-use and was redeemed at {_when(row.last_redeemed_at)}",
            "COUPON_ALREADY_REDEEMED",
        )
    return _refused(
        action,
        row,
        CouponState.REDEEMED,
        f"its holder has used all {row.max_redemptions} redemptions this book allows per user",
        "REDEMPTION_LIMIT_REACHED",
        redemption_count=row.redemption_count,
        max_redemptions=row.max_redemptions,
    )


def _shared_limit(action: str, outcome: Outcome) -> FailedPrecondition:
    """A shared code at its global cap, or the caller at their own cap on it."""
    row = outcome.coupon()
    if outcome.outcome == "SHARED_LIMIT_REACHED":
        return _refused(
            action,
            row,
            CouponState.REDEEMED,
            f"the shared code was redeemed {row.redemption_count} of the {row.max_redemptions} times it allows",
            "SHARED_LIMIT_REACHED",
            redemption_count=row.redemption_count,
            max_redemptions=row.max_redemptions,
        )
    used, limit = outcome.user_redemptions or 0, outcome.user_limit or 0
    return FailedPrecondition(
        f"Cannot {action} shared code {row.code} again: you have redeemed it {used} of the {limit} times "
        "it allows per user.",
        reason="USER_LIMIT_REACHED",
        metadata={"code": row.code, "user_redemptions": used, "max_redemptions_per_user": limit},
        violations=[PreconditionViolation("USER_LIMIT_REACHED", f"coupon:{row.code}", "per-user cap reached")],
    )


def _order_refused(reason: str, outcome: Outcome) -> FailedPrecondition:
    """The order does not fit the book's discount: its currency, or its amount below the minimum."""
    code, currency, minimum = outcome.code or "", outcome.currency or "", money.text(outcome.min_order_amount)
    message, rule = {
        "CURRENCY_MISMATCH": (
            f"Coupon {code} gives its discount in {currency}: the order must be in {currency}.",
            f"order currency must be {currency}",
        ),
        "ORDER_AMOUNT_REQUIRED": (
            f"Coupon {code} needs an order of at least {minimum} {currency}: give order_amount and currency.",
            "order amount required",
        ),
        "ORDER_BELOW_MINIMUM": (
            f"Coupon {code} needs an order of at least {minimum} {currency}.",
            f"minimum order {minimum} {currency}",
        ),
    }[reason]
    return FailedPrecondition(
        message,
        reason=reason,
        metadata={"code": code, "currency": currency, "min_order_amount": minimum},
        violations=[PreconditionViolation(reason, f"coupon:{code}", rule)],
    )


def _rollback_refused(reason: str, outcome: Outcome) -> DomainError:
    code = outcome.code or ""
    if reason == "REDEMPTION_NOT_FOUND":
        return NotFound(
            "redemption",
            code,
            reason=reason,
            message=f"Coupon {code} has no redemption for this order reference.",
        )
    message, rule = {
        "ALREADY_ROLLED_BACK": (
            f"The redemption of coupon {code} for this order was already rolled back.",
            "rolled back already",
        ),
        "ROLLBACK_WINDOW_PASSED": (
            f"Cannot roll back the redemption of coupon {code} made at {_when(outcome.last_redeemed_at)}: "
            "the book's rollback window has passed.",
            "rollback window passed",
        ),
    }[reason]
    return FailedPrecondition(
        message,
        reason=reason,
        metadata={"code": code},
        violations=[PreconditionViolation(reason, f"coupon:{code}", rule)],
    )


def _locked(row: CouponRow, reason: str) -> FailedPrecondition:
    until = _when(row.lock_expires_at)
    message, rule = {
        "COUPON_ALREADY_LOCKED": (f"Coupon {row.code} is already locked until {until}.", "already locked"),
        "COUPON_LOCKED": (
            f"Coupon {row.code} is locked until {until}: redeem with its lock id or unlock it first.",
            "locked by a checkout",
        ),
        "WRONG_LOCK_ID": (
            f"Coupon {row.code} is locked until {until} by another checkout: the lock id does not match.",
            "lock id does not match",
        ),
    }[reason]
    return FailedPrecondition(
        message,
        reason=reason,
        metadata={"code": row.code, "state": CouponState.LOCKED, "lock_expire_time": until},
        violations=[PreconditionViolation(reason, f"coupon:{row.code}", rule)],
    )


def refusal(outcome: Outcome, action: str) -> DomainError:
    """The error for a hot-path function's refusal (outcome.outcome names the reason)."""
    reason, row, book_id, name = outcome.outcome, outcome.coupon(), outcome.book_id or "", outcome.book_name or ""
    match reason:
        case "BUSY":
            return coupon_busy(row.code)
        case "COUPON_NOT_FOUND":
            return coupon_not_found(row.code)
        case "BOOK_NOT_FOUND":
            return book_not_found(book_id)
        case "BOOK_ARCHIVED" | "BOOK_NOT_YET_VALID" | "BOOK_EXPIRED":
            return book_closed(reason, book_id, outcome.valid_from, outcome.valid_until, action, name)
        case "BOOK_SHARED":
            return book_shared(book_id, name)
        case "COUPON_SHARED":
            return FailedPrecondition(
                f"Cannot {action} shared code {row.code}: shared codes have no holder and no lock; "
                "redeem it directly, without a lock id.",
                reason=reason,
                metadata={"code": row.code},
                violations=[PreconditionViolation(reason, f"coupon:{row.code}", "shared codes are only redeemed")],
            )
        case "SHARED_LIMIT_REACHED" | "USER_LIMIT_REACHED":
            return _shared_limit(action, outcome)
        case "CURRENCY_MISMATCH" | "ORDER_AMOUNT_REQUIRED" | "ORDER_BELOW_MINIMUM":
            return _order_refused(reason, outcome)
        case "REDEMPTION_NOT_FOUND" | "ALREADY_ROLLED_BACK" | "ROLLBACK_WINDOW_PASSED":
            return _rollback_refused(reason, outcome)
        case "SELF_CLAIM_NOT_ALLOWED":
            return self_claim_not_allowed(book_id, name)
        case "BOOK_BUSY":
            return book_busy(book_id, name)
        case "NO_CODES_AVAILABLE":
            return too_few_codes(book_id, 0, 1, name)
        case "ASSIGNMENT_LIMIT_REACHED":
            return assignment_limit(row.user_id or "", outcome.held or 0, outcome.assignment_limit or 0)
        case "REQUEST_ID_REUSED":
            return request_id_reused()
        case "COUPON_NOT_AVAILABLE":
            holder = f"it already has a holder (user {row.user_id})"
            return _refused(action, row, state_of(row), holder, reason)
        case "COUPON_NOT_LOCKED":
            return _refused(action, row, state_of(row), "it is not locked", reason)
        case "COUPON_NOT_ASSIGNED":
            return _refused(action, row, CouponState.AVAILABLE, "it has no holder; assign it first", reason)
        case "NO_REDEMPTIONS_LEFT":
            return _no_redemptions_left(action, row)
        case "COUPON_ALREADY_LOCKED" | "COUPON_LOCKED" | "WRONG_LOCK_ID":
            return _locked(row, reason)
    raise LookupError(f"the ledger refused with an unknown reason: {reason}")
