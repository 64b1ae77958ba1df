"""Demo data beyond the users (SPEC §8), loaded through the services' own gRPC APIs as the demo admin.

Safe to run again on the same database: what exists already is left as it is.
"""

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from coupons.books.v1 import books_pb2, books_pb2_grpc
from coupons.pools.v1 import pools_pb2, pools_pb2_grpc
from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from kernel.components import SERVICES
from kernel.grpc_clients import channel
from suite.processes import Suite

DEMO_BOOKS = [
    books_pb2.Book(
        name="Summer Sale 2026",
        description="20% off everything, once per code.",
        code_pattern="SUMMER-{}-2026",
        code_length=6,
        max_assignments_per_user=3,
    ),
    books_pb2.Book(
        name="VIP Rewards",
        description="A free coffee, up to three times per code.",
        code_pattern="VIP-{}",
        code_length=8,
        allow_multi_redemption=True,
        max_redemptions_per_user=3,
    ),
    # Self-service: any signed-in user may claim one code (POST /api/v1/coupons/assign {"book_id": ...}).
    books_pb2.Book(
        name="Welcome Gift",
        description="A welcome gift every member may claim once, themself.",
        code_pattern="WELCOME-{}",
        code_length=6,
        max_assignments_per_user=1,
        allow_self_claim=True,
    ),
    # One shared code anyone signed in may redeem once, 100 times in all: WELCOME10, 10% off.
    books_pb2.Book(
        name="WELCOME10",
        description="10% off an order, once per user, for the first 100 orders.",
        shared=True,
        max_redemptions_total=100,
        discount_type=books_pb2.DISCOUNT_TYPE_PERCENTAGE,
        percent_off="10",
        currency="EUR",
    ),
]
# Books whose codes are given, not generated.
GIVEN_CODES = {"WELCOME10": ["WELCOME10"]}
CODES_PER_BOOK = 1000
POOL = pools_pb2.Pool(name="Beta Testers", description="Early users who try new offers first.")
POOL_MEMBERS = ["alice@example.com", "bob@example.com", "charlie@example.com"]


async def _ensure_book(books, book: books_pb2.Book, metadata) -> books_pb2.Book:
    listing = await books.ListBooks(books_pb2.ListBooksRequest(name_contains=book.name), metadata=metadata)
    for existing in listing.books:
        if existing.name == book.name:
            return existing
    created = await books.CreateBook(books_pb2.CreateBookRequest(book=book), metadata=metadata)
    if book.name in GIVEN_CODES:
        request = books_pb2.ImportCodesRequest(book_id=created.id, codes=GIVEN_CODES[book.name])
        await books.ImportCodes(request, metadata=metadata)
        return created
    async for _ in books.GenerateCodes(
        books_pb2.GenerateCodesRequest(book_id=created.id, count=CODES_PER_BOOK), metadata=metadata
    ):
        pass
    return created


async def load(suite: Suite) -> str:
    """Loads the demo books, alice's coupons and the demo pool; returns lines for the banner."""
    channels = {name: channel(suite.target(name)) for name in SERVICES}
    try:
        auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
        admin = await auth.Login(auth_pb2.LoginRequest(email="admin@example.com", password="admin123"))
        metadata = (("authorization", f"Bearer {admin.access_token}"),)
        alice = await auth.LookupUserByEmail(
            auth_pb2.LookupUserByEmailRequest(email="alice@example.com"), metadata=metadata
        )
        books = books_pb2_grpc.BookServiceStub(channels["books"])
        redemption = redemption_pb2_grpc.RedemptionServiceStub(channels["redemption"])
        demo_books = [await _ensure_book(books, book, metadata) for book in DEMO_BOOKS]
        # alice claims the self-claim books herself; shared codes have no holder
        handed_out = [b for b in demo_books if not (b.allow_self_claim or b.shared)]
        held = await redemption.ListUserCoupons(
            redemption_pb2.ListUserCouponsRequest(user_id=alice.id), metadata=metadata
        )
        if not held.coupons:
            for book in handed_out:
                for _ in range(2):
                    await redemption.AssignRandomCoupon(
                        redemption_pb2.AssignRandomCouponRequest(book_id=book.id, user_id=alice.id), metadata=metadata
                    )
        pools = pools_pb2_grpc.PoolServiceStub(channels["pools"])
        listing = await pools.ListPools(pools_pb2.ListPoolsRequest(page_size=1000), metadata=metadata)
        pool = next((p for p in listing.pools if p.name == POOL.name), None)
        if pool is None:
            pool = await pools.CreatePool(pools_pb2.CreatePoolRequest(pool=POOL), metadata=metadata)
            await pools.AddPoolMembers(
                pools_pb2.AddPoolMembersRequest(pool_id=pool.id, emails=POOL_MEMBERS), metadata=metadata
            )
        lines = ["", "Demo data:"]
        lines += [f"  book {b.name!r}: {b.id}" for b in demo_books]
        lines += [f"  pool {pool.name!r}: {pool.id}", f"  alice: {alice.id}"]
        return "\n".join(lines)
    finally:
        for ch in channels.values():
            await ch.close()
