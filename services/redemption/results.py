"""What the ledger's operations answer, and their JSON form for idempotent replay."""

import dataclasses
import datetime as dt
import decimal
import json
import typing
from dataclasses import dataclass

from services.redemption.model import CouponRow, CouponState


@dataclass(frozen=True)
class Coupon:
    """A coupon as callers see it: REDEEMED when no use is left; else EXPIRED past its book's valid_until;
    else a live lock reads as LOCKED (an expired lock is no lock)."""

    code: str
    book_id: str
    state: str
    user_id: str | None
    lock_expires_at: dt.datetime | None
    redemption_count: int
    max_redemptions: int
    assigned_at: dt.datetime | None
    last_redeemed_at: dt.datetime | None
    shared: bool = False
    book_name: str = ""  # empty in answers stored before books sent names (migration 0010)

    @property
    def remaining_redemptions(self) -> int:
        return max(self.max_redemptions - self.redemption_count, 0)

    @classmethod
    def of(cls, row: CouponRow) -> "Coupon":
        state = row.state
        if state != CouponState.REDEEMED and row.expired:
            state = CouponState.EXPIRED
        elif state != CouponState.REDEEMED and row.locked:
            state = CouponState.LOCKED
        return cls(
            code=row.code,
            book_id=row.book_id,
            state=state,
            user_id=row.user_id,
            lock_expires_at=row.lock_expires_at if state == CouponState.LOCKED else None,
            redemption_count=row.redemption_count,
            max_redemptions=row.max_redemptions,
            assigned_at=row.assigned_at,
            last_redeemed_at=row.last_redeemed_at,
            shared=row.shared,
            book_name=row.book_name,
        )


@dataclass(frozen=True)
class LockResult:
    coupon: Coupon
    lock_id: str
    lock_expires_at: dt.datetime


@dataclass(frozen=True)
class RedeemResult:
    coupon: Coupon
    remaining_redemptions: int
    discount: decimal.Decimal | None = None  # what to take off the order, in currency
    currency: str = ""


@dataclass(frozen=True)
class AddCodesResult:
    inserted: int
    existing: list[str]


@dataclass(frozen=True)
class UserCodes:
    user_id: str
    codes: list[str]


@dataclass(frozen=True)
class BulkAssignResult:
    assignments: list[UserCodes]
    assigned: int


def encode(result) -> bytes:
    return json.dumps(dataclasses.asdict(result), default=dt.datetime.isoformat).encode()


def decode(kind: type, data: bytes):
    return _build(kind, json.loads(data))


def _build(kind, value):
    """Rebuilds a value of `kind` (a dataclass, list, optional datetime or plain JSON value) from JSON."""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{name: _build(hints[name], item) for name, item in value.items()})
    if typing.get_origin(kind) is list:
        return [_build(typing.get_args(kind)[0], item) for item in value]
    if value is not None and dt.datetime in (kind, *typing.get_args(kind)):
        return dt.datetime.fromisoformat(value)
    return value
