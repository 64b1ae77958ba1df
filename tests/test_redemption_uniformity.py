"""Random assignment is uniform: a chi-square test over the order in which codes leave small books.

Each code's key is drawn by PostgreSQL at insert and never shown; a pick takes the first available key
at or after a fresh random point. Given one fixed set of keys a code's chance is the gap before its key,
but over the draw of the keys (which is what makes the choice random) every order in which a book's codes
are handed out is equally likely. So we fill many 3-code books, empty each by random assignment, and
count the 6 possible orders (by insertion position): the statistic must stay under the p = 0.001 critical
value of chi-square with 5 degrees of freedom. A bias towards insertion order, code value or key order
fails it.
"""

import asyncio
import collections
import itertools

from coupons.redemption.v1 import redemption_pb2 as pb

CODES_PER_BOOK = 3
BOOKS = 300
CHI_SQUARE_5_DOF_P_001 = 20.515


async def test_random_assignment_order_is_uniform(ledger):
    limit = asyncio.Semaphore(32)

    async def hand_out_one_book() -> tuple[int, ...]:
        async with limit:
            book_id, codes = await ledger.book(CODES_PER_BOOK)
            order = []
            for _ in range(CODES_PER_BOOK - 1):  # the last code's place follows from the others
                coupon = await ledger.next_stub().AssignRandomCoupon(
                    pb.AssignRandomCouponRequest(book_id=book_id, user_id=ledger.caller().user_id),
                    metadata=ledger.admin.metadata,
                )
                order.append(codes.index(coupon.code))
            return (*order, *(set(range(CODES_PER_BOOK)) - set(order)))

    orders = collections.Counter(await asyncio.gather(*(hand_out_one_book() for _ in range(BOOKS))))
    cells = list(itertools.permutations(range(CODES_PER_BOOK)))
    assert set(orders) <= set(cells)
    expected = BOOKS / len(cells)
    statistic = sum((orders[cell] - expected) ** 2 / expected for cell in cells)
    assert statistic < CHI_SQUARE_5_DOF_P_001, (statistic, orders)
