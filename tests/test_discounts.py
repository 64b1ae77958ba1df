"""Discounts: what a code gives an order (percentage rounded in the currency's minor unit, fixed amount,
maximum, minimum order), recorded in history; unknown currencies and orders that do not fit refused."""

import grpc

from coupons.books.v1 import books_pb2
from coupons.redemption.v1 import redemption_pb2 as pb
from tests.support import bearer, expect_error

FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def discount_coupon(ledger, uses: int = 10, **discount):
    """(code, holder): a personal coupon of `uses` redemptions whose book gives `discount`."""
    _, code, holder = await ledger.held_coupon(
        allow_multi_redemption=uses > 1, max_redemptions_per_user=uses, **discount
    )
    return code, holder


async def redeem(ledger, code: str, holder, amount: str, currency: str, reference: str = "") -> pb.RedeemCouponResponse:
    return await ledger.stub.RedeemCoupon(
        pb.RedeemCouponRequest(code=code, order_reference=reference, order_amount=amount, currency=currency),
        metadata=holder.metadata,
    )


async def test_percentage_rounds_half_up_in_the_currencys_minor_unit(ledger):
    cases = {
        ("10", "EUR", "59.90"): "5.99",
        ("10", "EUR", "0.05"): "0.01",  # 0.005 rounds up to the cent
        ("10", "EUR", "0.04"): "0.00",  # 0.004 rounds down
        ("12.5", "USD", "0.99"): "0.12",  # 0.12375
        ("10", "JPY", "105"): "11",  # 10.5 yen: no minor unit
        ("10", "KWD", "1.235"): "0.124",  # 0.1235 in fils (3 decimals)
        ("100", "EUR", "20.00"): "20.00",
    }
    answers = {}
    for percent, currency, amount in cases:
        code, holder = await discount_coupon(
            ledger, discount_type=pb.DISCOUNT_TYPE_PERCENTAGE, percent_off=percent, currency=currency
        )
        redeemed = await redeem(ledger, code, holder, amount, currency)
        answers[(percent, currency, amount)] = redeemed.discount
        assert redeemed.currency == currency
    assert answers == cases


async def test_maximum_discount_fixed_amount_and_never_more_than_the_order(ledger):
    code, holder = await discount_coupon(
        ledger, discount_type=pb.DISCOUNT_TYPE_PERCENTAGE, percent_off="50", max_discount="10.00", currency="EUR"
    )
    assert [(await redeem(ledger, code, holder, a, "EUR")).discount for a in ("100.00", "15.00")] == ["10.00", "7.50"]
    code, holder = await discount_coupon(
        ledger, discount_type=pb.DISCOUNT_TYPE_FIXED_AMOUNT, amount_off="5.00", currency="EUR"
    )
    assert [(await redeem(ledger, code, holder, a, "EUR")).discount for a in ("30.00", "3.00")] == ["5.00", "3.00"]
    # Without an order amount a redeem works as before and prices nothing.
    plain = await ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
    assert (plain.discount, plain.currency, plain.coupon.redemption_count) == ("", "", 3)


async def test_minimum_order_and_currency_refusals_write_nothing(ledger, ledger_db):
    code, holder = await discount_coupon(
        ledger, discount_type=pb.DISCOUNT_TYPE_FIXED_AMOUNT, amount_off="5", min_order_amount="20.00", currency="EUR"
    )
    error = await expect_error(redeem(ledger, code, holder, "19.99", "EUR"), FAILED, "ORDER_BELOW_MINIMUM")
    assert error.message == f"Coupon {code} needs an order of at least 20.00 EUR."
    await expect_error(
        ledger.stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata),
        FAILED,
        "ORDER_AMOUNT_REQUIRED",
    )
    await expect_error(redeem(ledger, code, holder, "25.00", "USD"), FAILED, "CURRENCY_MISMATCH")
    for amount, currency, field in (
        ("25.00", "XYZ", "currency"),
        ("25.00", "", "currency"),
        ("25.001", "EUR", "order_amount"),
        ("-1", "EUR", "order_amount"),
        ("1e3", "EUR", "order_amount"),
        ("", "EUR", "currency"),
    ):
        error = await expect_error(redeem(ledger, code, holder, amount, currency), INVALID)
        assert list(error.field_violations) == [field], (amount, currency)
    row = await (
        await ledger_db.execute(
            "SELECT c.redemption_count, (SELECT count(*) FROM redemption.history h WHERE h.code = c.code) "
            "FROM redemption.coupons c WHERE c.code = %s",
            (code,),
        )
    ).fetchone()
    assert row == (0, 1)  # only the assignment

    redeemed = await redeem(ledger, code, holder, "20.00", "EUR", reference="order-42")
    assert redeemed.discount == "5"
    history = await ledger.stub.ListCouponHistory(
        pb.ListCouponHistoryRequest(code=code), metadata=ledger.admin.metadata
    )
    last = history.entries[-1]
    assert (last.event, last.order_reference, last.order_amount, last.discount, last.currency) == (
        pb.REDEEMED_EVENT,
        "order-42",
        "20.00",
        "5",
        "EUR",
    )


async def test_books_checks_a_discount_and_pushes_it_to_the_ledger(books_stub, admin_session, database_url):
    import psycopg

    async def create(**fields):
        book = books_pb2.Book(name="Discount book", **fields)
        return await books_stub.CreateBook(books_pb2.CreateBookRequest(book=book), metadata=bearer(admin_session))

    percent = books_pb2.DISCOUNT_TYPE_PERCENTAGE
    for fields, field in (
        ({"discount_type": percent, "percent_off": "10", "currency": "XYZ"}, "currency"),
        ({"discount_type": percent, "percent_off": "100.5", "currency": "EUR"}, "percent_off"),
        ({"discount_type": percent, "percent_off": "10"}, "currency"),
        ({"discount_type": books_pb2.DISCOUNT_TYPE_FIXED_AMOUNT, "amount_off": "1.5", "currency": "JPY"}, "amount_off"),
        ({"discount_type": books_pb2.DISCOUNT_TYPE_FIXED_AMOUNT, "currency": "EUR"}, "amount_off"),
        ({"min_order_amount": "10", "currency": "EUR"}, "min_order_amount"),
    ):
        error = await expect_error(create(**fields), INVALID, "INVALID_BOOK")
        assert field in list(error.field_violations), fields
    book = await create(
        discount_type=percent, percent_off="12.5", max_discount="30", min_order_amount="50", currency="EUR"
    )
    assert (book.discount_type, book.percent_off, book.currency) == (percent, "12.5", "EUR")
    with psycopg.connect(database_url) as conn:
        pushed = conn.execute(
            "SELECT discount_type, percent_off::text, max_discount::text, min_order_amount::text, currency "
            "FROM redemption.book_rules WHERE book_id = %s",
            (book.id,),
        ).fetchone()
    assert pushed == ("PERCENTAGE", "12.50", "30", "50", "EUR")
