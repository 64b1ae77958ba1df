"""The ledger's domain types, shared by its rules, its data access and its servicers.

States and events are stored by these values; the servicers map them to the protobuf enums.
"""

import datetime as dt
import decimal
import enum
from dataclasses import dataclass


class CouponState(enum.StrEnum):
    AVAILABLE = "AVAILABLE"
    ASSIGNED = "ASSIGNED"
    REDEEMED = "REDEEMED"
    LOCKED = "LOCKED"  # derived: a held coupon whose lock has not expired; never stored
    EXPIRED = "EXPIRED"  # derived: a code with a use left past its book's valid_until; never stored


class LedgerEvent(enum.StrEnum):
    ASSIGNED = "ASSIGNED_EVENT"
    LOCKED = "LOCKED_EVENT"
    UNLOCKED = "UNLOCKED_EVENT"
    LOCK_EXPIRED = "LOCK_EXPIRED_EVENT"
    REDEEMED = "REDEEMED_EVENT"
    ROLLED_BACK = "ROLLED_BACK_EVENT"


class DiscountType(enum.StrEnum):
    NONE = ""
    PERCENTAGE = "PERCENTAGE"
    FIXED_AMOUNT = "FIXED_AMOUNT"


class Change(enum.StrEnum):
    """What redemption.change_code (migration 0006) does to one coupon; redeem is redemption.redeem (0007)."""

    LOCK = "LOCK"
    UNLOCK = "UNLOCK"
    ASSIGN = "ASSIGN"


@dataclass(frozen=True)
class BookRules:
    book_id: str
    allow_multi_redemption: bool
    max_redemptions: int
    max_assignments_per_user: int  # 0: no limit
    lock_ttl_seconds: int
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    archived: bool
    version: int
    allow_self_claim: bool = False  # a USER may assign random codes of the book to themself
    # Shared book: codes without a holder, which any signed-in user redeems, each at most
    # max_redemptions times (the per-user cap) and max_redemptions_total times in all (each code's global cap).
    shared: bool = False
    max_redemptions_total: int = 0
    # What a code gives: a percentage of the order or a fixed amount in currency (amounts in its units).
    discount_type: str = DiscountType.NONE
    percent_off: decimal.Decimal | None = None
    amount_off: decimal.Decimal | None = None
    max_discount: decimal.Decimal | None = None
    min_order_amount: decimal.Decimal | None = None
    currency: str = ""
    rollback_window_seconds: int = 0  # how long a redemption may be rolled back (0: the default)
    book_name: str = ""  # what coupons show (books' name for the book)


@dataclass(frozen=True)
class Order:
    """The checkout's order a redemption is for: recorded in history, its amount priced by the discount."""

    reference: str = ""
    amount: decimal.Decimal | None = None
    currency: str = ""
    exponent: int = 2  # the currency's minor unit: decimals of the discount


@dataclass(frozen=True)
class CouponRow:
    code: str
    book_id: str
    # A stored CouponState: AVAILABLE, ASSIGNED, or REDEEMED when no redemption is left; without lock or expiry.
    state: str
    user_id: str | None
    lock_id: str | None
    lock_expires_at: dt.datetime | None
    locked: bool  # the lock is live (not expired)
    redemption_count: int
    max_redemptions: int
    assigned_at: dt.datetime | None
    last_redeemed_at: dt.datetime | None
    expired: bool = False  # past the book's valid_until with a use left (reads as EXPIRED)
    shared: bool = False  # a shared code: no holder, max_redemptions is its global cap
    book_name: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one hot-path function call answers: OK with the coupon, or the reason it refused, with what
    the reason's message needs. Columns of the type redemption.outcome (migrations 0004, 0006)."""

    outcome: str
    code: str | None = None
    book_id: str | None = None
    state: str | None = None
    user_id: str | None = None
    lock_id: str | None = None
    lock_expires_at: dt.datetime | None = None
    locked: bool | None = None
    redemption_count: int | None = None
    max_redemptions: int | None = None
    assigned_at: dt.datetime | None = None
    last_redeemed_at: dt.datetime | None = None
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    held: int | None = None
    assignment_limit: int | None = None
    available: int | None = None
    shared: bool | None = None
    user_redemptions: int | None = None  # a shared code: the caller's redemptions of it
    user_limit: int | None = None  # a shared code: the per-user cap
    discount: decimal.Decimal | None = None  # what a redemption takes off the order (migration 0007)
    currency: str | None = None  # the book's
    min_order_amount: decimal.Decimal | None = None
    book_name: str | None = None  # migration 0010

    def coupon(self) -> CouponRow:
        return CouponRow(
            code=self.code or "",
            book_id=self.book_id or "",
            state=self.state or CouponState.AVAILABLE,
            user_id=self.user_id,
            lock_id=self.lock_id,
            lock_expires_at=self.lock_expires_at,
            locked=bool(self.locked),
            redemption_count=self.redemption_count or 0,
            max_redemptions=self.max_redemptions or 0,
            assigned_at=self.assigned_at,
            last_redeemed_at=self.last_redeemed_at,
            shared=bool(self.shared),
            book_name=self.book_name or "",
        )


@dataclass(frozen=True)
class HistoryRow:
    id: int
    code: str
    book_id: str
    event: str
    user_id: str | None
    actor_id: str
    request_id: str
    distribution_id: str
    created_at: dt.datetime
    order_reference: str = ""
    order_amount: decimal.Decimal | None = None
    discount: decimal.Decimal | None = None
    currency: str = ""
    reason: str = ""  # a rollback's
    undoes: int | None = None  # a rollback: the id of the redemption it undid


@dataclass(frozen=True)
class BookCounts:
    total: int
    available: int
    assigned: int
    locked: int
    redeemed: int
    expired: int
    redemptions: int
