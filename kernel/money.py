"""Amounts of money: ISO 4217 currencies with their minor units, and decimal amounts as the API spells them.

Amounts travel as decimal strings ("59.90", "1000") with at most as many decimals as the currency's minor
unit has (2 for EUR, 0 for JPY, 3 for KWD), never as floats.
"""

import decimal
import re

from kernel.errors import FieldViolation, InvalidArgument

# Active ISO 4217 codes with minor units other than 2; every other listed code has 2.
_MINOR_UNITS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}
_TWO_DECIMALS = """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
    CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ
    GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD
    SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED
    VES WST XCD YER ZAR ZMW ZWG"""
MINOR_UNITS: dict[str, int] = {**dict.fromkeys(_TWO_DECIMALS.split(), 2), **_MINOR_UNITS}
MAX_AMOUNT = decimal.Decimal("1e15")  # far above any order, far below numeric's limits
_AMOUNT = re.compile(r"^\d{1,16}(\.\d{1,4})?$")


def currency_violation(currency: str, field: str) -> FieldViolation | None:
    if currency not in MINOR_UNITS:
        return FieldViolation(field, f"must be an ISO 4217 currency code such as EUR or USD, got {currency[:8]!r}")
    return None


def amount_violation(text: str, currency: str, field: str) -> FieldViolation | None:
    """Why `text` is not an amount of `currency` (a known one) with at most its minor unit's decimals."""
    places = MINOR_UNITS[currency]
    if not _AMOUNT.match(text) or decimal.Decimal(text) >= MAX_AMOUNT:
        return FieldViolation(field, f'must be a decimal amount such as "59.90", below {MAX_AMOUNT:,.0f}')
    if -decimal.Decimal(text).as_tuple().exponent > places:  # type: ignore[operator]
        return FieldViolation(field, f"has more decimals than {currency}'s minor unit allows ({places})")
    return None


def parse(text: str, field: str) -> decimal.Decimal | None:
    """A decimal amount in any currency ("" for none); INVALID_ARGUMENT naming the field otherwise."""
    if not text:
        return None
    if not _AMOUNT.match(text) or decimal.Decimal(text) >= MAX_AMOUNT:
        raise InvalidArgument.field(field, f'must be a decimal amount such as "59.90", below {MAX_AMOUNT:,.0f}')
    return decimal.Decimal(text)


def text(amount: decimal.Decimal | None) -> str:
    """An amount as the API spells it ("" for none), without exponent notation."""
    return "" if amount is None else f"{amount:f}"
