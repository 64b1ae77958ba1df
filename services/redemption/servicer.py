"""RedemptionService over gRPC: protobuf in, domain call, protobuf out."""

from coupons.redemption.v1 import redemption_pb2 as pb
from coupons.redemption.v1 import redemption_pb2_grpc
from kernel import metrics, money
from kernel.context import current_principal
from kernel.timestamps import from_timestamp, to_timestamp
from kernel.validation import enum_name
from services.redemption.domain import OrderInput, RedemptionDomain
from services.redemption.model import BookCounts, BookRules, CouponState, DiscountType, HistoryRow, LedgerEvent
from services.redemption.queries import LedgerQueries
from services.redemption.results import Coupon, RedeemResult

SERVICE_NAMES = tuple(
    pb.DESCRIPTOR.services_by_name[name].full_name for name in ("RedemptionService", "LedgerInternalService")
)


# The domain's states and events as the API numbers them.
STATES = {
    CouponState.AVAILABLE: pb.AVAILABLE,
    CouponState.ASSIGNED: pb.ASSIGNED,
    CouponState.LOCKED: pb.LOCKED,
    CouponState.REDEEMED: pb.REDEEMED,
    CouponState.EXPIRED: pb.EXPIRED,
}
STATE_OF: dict[int, CouponState] = {number: state for state, number in STATES.items()}
EVENTS = {
    LedgerEvent.ASSIGNED: pb.ASSIGNED_EVENT,
    LedgerEvent.LOCKED: pb.LOCKED_EVENT,
    LedgerEvent.UNLOCKED: pb.UNLOCKED_EVENT,
    LedgerEvent.LOCK_EXPIRED: pb.LOCK_EXPIRED_EVENT,
    LedgerEvent.REDEEMED: pb.REDEEMED_EVENT,
    LedgerEvent.ROLLED_BACK: pb.ROLLED_BACK_EVENT,
}


DISCOUNT_TYPES = {
    DiscountType.NONE: pb.DISCOUNT_TYPE_UNSPECIFIED,
    DiscountType.PERCENTAGE: pb.DISCOUNT_TYPE_PERCENTAGE,
    DiscountType.FIXED_AMOUNT: pb.DISCOUNT_TYPE_FIXED_AMOUNT,
}
DISCOUNT_TYPE_OF: dict[int, DiscountType] = {number: kind for kind, number in DISCOUNT_TYPES.items()}


def _state(value: int) -> str | None:
    if value == pb.COUPON_STATE_UNSPECIFIED:
        return None
    enum_name(pb.CouponState, value, "state")  # refuses numbers the API does not define
    return STATE_OF[value]


def coupon_message(coupon: Coupon) -> pb.Coupon:
    return pb.Coupon(
        code=coupon.code,
        book_id=coupon.book_id,
        state=STATES[CouponState(coupon.state)],
        user_id=coupon.user_id or "",
        lock_expire_time=to_timestamp(coupon.lock_expires_at),
        redemption_count=coupon.redemption_count,
        max_redemptions=coupon.max_redemptions,
        assign_time=to_timestamp(coupon.assigned_at),
        last_redeem_time=to_timestamp(coupon.last_redeemed_at),
        remaining_redemptions=coupon.remaining_redemptions,
        shared=coupon.shared,
        book_name=coupon.book_name,
    )


def _rules_message(rules: BookRules) -> pb.BookRules:
    return pb.BookRules(
        book_id=rules.book_id,
        allow_multi_redemption=rules.allow_multi_redemption,
        max_redemptions_per_user=rules.max_redemptions,
        max_assignments_per_user=rules.max_assignments_per_user,
        lock_ttl_seconds=rules.lock_ttl_seconds,
        valid_from=to_timestamp(rules.valid_from),
        valid_until=to_timestamp(rules.valid_until),
        archived=rules.archived,
        version=rules.version,
        allow_self_claim=rules.allow_self_claim,
        shared=rules.shared,
        max_redemptions_total=rules.max_redemptions_total,
        discount_type=DISCOUNT_TYPES[DiscountType(rules.discount_type)],
        percent_off=money.text(rules.percent_off),
        amount_off=money.text(rules.amount_off),
        max_discount=money.text(rules.max_discount),
        min_order_amount=money.text(rules.min_order_amount),
        currency=rules.currency,
        rollback_window_seconds=rules.rollback_window_seconds,
        book_name=rules.book_name,
    )


def _rules(message: pb.BookRules) -> BookRules:
    return BookRules(
        book_id=message.book_id,
        allow_multi_redemption=message.allow_multi_redemption,
        max_redemptions=message.max_redemptions_per_user,
        max_assignments_per_user=message.max_assignments_per_user,
        lock_ttl_seconds=message.lock_ttl_seconds,
        valid_from=from_timestamp(message, "valid_from"),
        valid_until=from_timestamp(message, "valid_until"),
        archived=message.archived,
        version=message.version,
        allow_self_claim=message.allow_self_claim,
        shared=message.shared,
        max_redemptions_total=message.max_redemptions_total,
        discount_type=DISCOUNT_TYPE_OF.get(message.discount_type, str(message.discount_type)),
        percent_off=money.parse(message.percent_off, "rules.percent_off"),
        amount_off=money.parse(message.amount_off, "rules.amount_off"),
        max_discount=money.parse(message.max_discount, "rules.max_discount"),
        min_order_amount=money.parse(message.min_order_amount, "rules.min_order_amount"),
        currency=message.currency,
        rollback_window_seconds=message.rollback_window_seconds,
        book_name=message.book_name,
    )


def _coupons(coupons: list[Coupon], next_token: str, total: int) -> pb.ListCouponsResponse:
    return pb.ListCouponsResponse(
        coupons=[coupon_message(c) for c in coupons], next_page_token=next_token, total_size=total
    )


def _history(entries: list[HistoryRow], next_token: str, total: int) -> pb.ListHistoryResponse:
    return pb.ListHistoryResponse(
        next_page_token=next_token,
        total_size=total,
        entries=[
            pb.HistoryEntry(
                id=e.id,
                code=e.code,
                book_id=e.book_id,
                event=EVENTS[LedgerEvent(e.event)],
                user_id=e.user_id or "",
                actor_id=e.actor_id,
                request_id=e.request_id,
                distribution_id=e.distribution_id,
                time=to_timestamp(e.created_at),
                order_reference=e.order_reference,
                order_amount=money.text(e.order_amount),
                discount=money.text(e.discount),
                currency=e.currency,
                reason=e.reason,
                undoes_id=e.undoes or 0,
            )
            for e in entries
        ],
    )


def _counts(book_id: str, counts: BookCounts) -> pb.BookCounts:
    return pb.BookCounts(
        book_id=book_id,
        total=counts.total,
        available=counts.available,
        assigned=counts.assigned,
        locked=counts.locked,
        redeemed=counts.redeemed,
        redemptions=counts.redemptions,
        expired=counts.expired,
    )


def _redeemed(result: RedeemResult) -> dict:
    """The fields RedeemCouponResponse and ValidateCouponResponse share."""
    return {
        "coupon": coupon_message(result.coupon),
        "remaining_redemptions": result.remaining_redemptions,
        "discount": money.text(result.discount),
        "currency": result.currency,
    }


class RedemptionServicer(redemption_pb2_grpc.RedemptionServiceServicer):
    def __init__(self, domain: RedemptionDomain, queries: LedgerQueries):
        self.domain = domain
        self.queries = queries

    async def AssignRandomCoupon(self, request, context):
        coupon = await self.domain.assign_random(
            current_principal(), request.book_id, request.user_id, request.request_id
        )
        return coupon_message(coupon)

    async def AssignCoupon(self, request, context):
        coupon = await self.domain.assign(current_principal(), request.code, request.user_id, request.request_id)
        return coupon_message(coupon)

    async def LockCoupon(self, request, context):
        result = await self.domain.lock(current_principal(), request.code, request.request_id)
        return pb.LockCouponResponse(
            coupon=coupon_message(result.coupon),
            lock_id=result.lock_id,
            lock_expire_time=to_timestamp(result.lock_expires_at),
        )

    async def UnlockCoupon(self, request, context):
        return coupon_message(await self.domain.unlock(current_principal(), request.code, request.request_id))

    async def RedeemCoupon(self, request, context):
        result = await self.domain.redeem(
            current_principal(),
            request.code,
            request.lock_id,
            request.request_id,
            OrderInput(request.order_reference, request.order_amount, request.currency),
        )
        metrics.REDEMPTIONS.labels(result.coupon.book_id).inc()
        return pb.RedeemCouponResponse(**_redeemed(result))

    async def ValidateCoupon(self, request, context):
        result = await self.domain.validate(
            current_principal(), request.code, request.lock_id, OrderInput("", request.order_amount, request.currency)
        )
        return pb.ValidateCouponResponse(**_redeemed(result))

    async def RollbackRedemption(self, request, context):
        result = await self.domain.rollback(
            current_principal(), request.code, request.order_reference, request.reason, request.request_id
        )
        return pb.RollbackRedemptionResponse(coupon=coupon_message(result.coupon), discount=money.text(result.discount))

    async def GetCoupon(self, request, context):
        return coupon_message(await self.queries.get(current_principal(), request.code))

    async def ListUserCoupons(self, request, context):
        return _coupons(
            *await self.queries.list_user_coupons(
                current_principal(),
                request.user_id,
                _state(request.state),
                request.book_id,
                request.page_size,
                request.page_token,
            )
        )

    async def ListBookCoupons(self, request, context):
        return _coupons(
            *await self.queries.list_book_coupons(
                request.book_id, _state(request.state), request.page_size, request.page_token
            )
        )

    async def ListCouponHistory(self, request, context):
        return _history(*await self.queries.coupon_history(request.code, request.page_size, request.page_token))

    async def ListBookHistory(self, request, context):
        return _history(*await self.queries.book_history(request.book_id, request.page_size, request.page_token))


class LedgerInternalServicer(redemption_pb2_grpc.LedgerInternalServiceServicer):
    """What books and pools ask of the ledger, each signed in as itself (the access rules admit only SERVICE)."""

    def __init__(self, domain: RedemptionDomain, queries: LedgerQueries):
        self.domain = domain
        self.queries = queries

    async def PutBookRules(self, request, context):
        return _rules_message(await self.domain.put_rules(_rules(request.rules)))

    async def AddCodes(self, request, context):
        result = await self.domain.add_codes(
            current_principal(), request.book_id, list(request.codes), request.request_id
        )
        return pb.AddCodesResponse(inserted=result.inserted, existing=result.existing)

    async def GetBookCounts(self, request, context):
        counts = await self.queries.book_counts(request.book_id)
        message = _counts(request.book_id, counts)
        metrics.AVAILABLE_CODES.labels(request.book_id).set(message.available)
        return message

    async def GetAssignmentCounts(self, request, context):
        held, available, rules = await self.queries.assignment_counts(request.book_id, list(request.user_ids))
        return pb.GetAssignmentCountsResponse(
            counts=[pb.UserAssignmentCount(user_id=u, held=n) for u, n in held.items()],
            available=available,
            rules=_rules_message(rules),
        )

    async def BulkAssign(self, request, context):
        result = await self.domain.bulk_assign(
            current_principal(),
            request.book_id,
            [(a.user_id, a.count) for a in request.assignments],
            request.distribution_id,
            request.request_id,
        )
        return pb.BulkAssignResponse(
            assigned=result.assigned,
            assignments=[pb.UserCodes(user_id=a.user_id, codes=a.codes) for a in result.assignments],
        )
