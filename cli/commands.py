"""One coroutine per CLI command; each takes the parsed arguments and a Client."""

import csv
import json
import os
from pathlib import Path

from google.protobuf import json_format

from cli.output import Progress, write_csv
from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from coupons.books.v1 import books_pb2, books_pb2_grpc
from coupons.events.v1 import events_pb2, events_pb2_grpc, webhooks_pb2_grpc
from coupons.pools.v1 import pools_pb2, pools_pb2_grpc
from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from kernel.grpc_clients import channel

UPLOAD_CHUNK = 5000


def token_file() -> Path:
    return Path(os.environ.get("COUPONS_CLI_TOKEN_FILE", Path.home() / ".config" / "coupons-cli" / "token"))


class Client:
    """Stubs for every service, with the saved token on every call."""

    def __init__(self, addresses: dict[str, str]):
        self.channels = {name: channel(address) for name, address in addresses.items()}
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channels["auth"])
        self.books = books_pb2_grpc.BookServiceStub(self.channels["books"])
        self.redemption = redemption_pb2_grpc.RedemptionServiceStub(self.channels["redemption"])
        self.pools = pools_pb2_grpc.PoolServiceStub(self.channels["pools"])
        self.events = events_pb2_grpc.EventServiceStub(self.channels["events"])
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(self.channels["events"])

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        path = token_file()
        return (("authorization", f"Bearer {path.read_text().strip()}"),) if path.exists() else ()

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()


def show(message) -> None:
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2))


async def login(args, client: Client) -> None:
    session = await client.auth.Login(auth_pb2.LoginRequest(email=args.email, password=args.password))
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(session.access_token)
    path.chmod(0o600)
    print(f"signed in as {session.user.email} ({auth_pb2.Role.Name(session.user.role)}); token saved to {path}")


async def books_create(args, client: Client) -> None:
    book = books_pb2.Book(
        name=args.name,
        description=args.description or "",
        code_pattern=args.pattern or "",
        code_length=args.length or 0,
        allow_multi_redemption=args.multi,
        max_redemptions_per_user=args.max_redemptions or 0,
        max_assignments_per_user=args.max_assignments or 0,
        lock_ttl_seconds=args.lock_ttl or 0,
        shared=args.shared,
        max_redemptions_total=args.max_total or 0,
        discount_type=_discount_type(args),
        percent_off=args.percent_off or "",
        amount_off=args.amount_off or "",
        max_discount=args.max_discount or "",
        min_order_amount=args.min_order or "",
        currency=args.currency or "",
        rollback_window_seconds=args.rollback_window or 0,
    )
    show(await client.books.CreateBook(books_pb2.CreateBookRequest(book=book), metadata=client.metadata))


def _discount_type(args) -> "books_pb2.DiscountType":
    if args.percent_off:
        return books_pb2.DISCOUNT_TYPE_PERCENTAGE
    if args.amount_off:
        return books_pb2.DISCOUNT_TYPE_FIXED_AMOUNT
    return books_pb2.DISCOUNT_TYPE_UNSPECIFIED


async def validate(args, client: Client) -> None:
    request = redemption_pb2.ValidateCouponRequest(
        code=args.code, lock_id=args.lock_id or "", order_amount=args.amount or "", currency=args.currency or ""
    )
    show(await client.redemption.ValidateCoupon(request, metadata=client.metadata))


async def redeem(args, client: Client) -> None:
    request = redemption_pb2.RedeemCouponRequest(
        code=args.code,
        lock_id=args.lock_id or "",
        order_reference=args.order or "",
        order_amount=args.amount or "",
        currency=args.currency or "",
    )
    show(await client.redemption.RedeemCoupon(request, metadata=client.metadata))


async def events(args, client: Client) -> None:
    """One JSON line per event (its cursor included, for --after on the next run)."""
    request = events_pb2.WatchEventsRequest(
        after_cursor=args.after, from_oldest=args.from_oldest, types=args.type, book_id=args.book
    )
    async for event in client.events.WatchEvents(request, metadata=client.metadata):
        print(json.dumps(json_format.MessageToDict(event, preserving_proto_field_name=True)), flush=True)


async def rollback(args, client: Client) -> None:
    request = redemption_pb2.RollbackRedemptionRequest(code=args.code, order_reference=args.order, reason=args.reason)
    show(await client.redemption.RollbackRedemption(request, metadata=client.metadata))


async def books_list(args, client: Client) -> None:
    token = ""
    rows = []
    while True:
        page = await client.books.ListBooks(
            books_pb2.ListBooksRequest(page_size=200, page_token=token, name_contains=args.name or ""),
            metadata=client.metadata,
        )
        rows += [(b.id, b.name, books_pb2.BookStatus.Name(b.status), b.code_count) for b in page.books]
        token = page.next_page_token
        if not token:
            break
    write_csv(None, ["id", "name", "status", "codes"], rows)


async def books_stats(args, client: Client) -> None:
    show(await client.books.GetBookStats(books_pb2.GetBookStatsRequest(id=args.book_id), metadata=client.metadata))


async def codes_generate(args, client: Client) -> None:
    progress = Progress(args.count, "generating")
    stream = client.books.GenerateCodes(
        books_pb2.GenerateCodesRequest(book_id=args.book_id, count=args.count), metadata=client.metadata
    )
    async for update in stream:
        progress.update(update.generated)
    progress.finish()
    print(f"generated {args.count:,} codes for book {args.book_id}")


def _codes_from_csv(path: str) -> list[str]:
    """The 'code' column when the file has that header, else the first column."""
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and rows[0][0].strip().lower() == "code":
        rows = rows[1:]
    return [row[0] for row in rows]


async def codes_upload(args, client: Client) -> int:
    codes = _codes_from_csv(args.file)
    progress = Progress(len(codes), "uploading")

    async def chunks():
        for start in range(0, len(codes), UPLOAD_CHUNK):
            yield books_pb2.UploadCodesChunk(
                book_id=args.book_id if start == 0 else "", codes=codes[start : start + UPLOAD_CHUNK]
            )
            progress.update(min(start + UPLOAD_CHUNK, len(codes)))

    report = await client.books.UploadCodes(chunks(), metadata=client.metadata)
    progress.finish()
    print(f"received {report.received:,}, stored {report.accepted:,}, refused {len(report.rejected):,}")
    for rejected in report.rejected:
        print(f"  row {rejected.index + 1}: {rejected.code!r}: {rejected.reason}: {rejected.message}")
    return 1 if report.rejected else 0


async def codes_export(args, client: Client) -> None:
    async def rows():
        token = ""
        state = args.state or None  # an enum value's name, or unset (COUPON_STATE_UNSPECIFIED)
        while True:
            page = await client.redemption.ListBookCoupons(
                redemption_pb2.ListBookCouponsRequest(
                    book_id=args.book_id, state=state, page_size=1000, page_token=token
                ),
                metadata=client.metadata,
            )
            for c in page.coupons:
                yield [c.code, redemption_pb2.CouponState.Name(c.state), c.user_id, c.redemption_count]
            token = page.next_page_token
            if not token:
                return

    written = write_csv(args.output, ["code", "state", "user_id", "redemption_count"], [r async for r in rows()])
    if args.output not in (None, "-"):
        print(f"wrote {written:,} codes to {args.output}")


async def history_export(args, client: Client) -> None:
    async def rows():
        token = ""
        while True:
            if args.code:
                page = await client.redemption.ListCouponHistory(
                    redemption_pb2.ListCouponHistoryRequest(code=args.code, page_size=1000, page_token=token),
                    metadata=client.metadata,
                )
            else:
                page = await client.redemption.ListBookHistory(
                    redemption_pb2.ListBookHistoryRequest(book_id=args.book_id, page_size=1000, page_token=token),
                    metadata=client.metadata,
                )
            for e in page.entries:
                yield [
                    e.time.ToJsonString(),
                    e.code,
                    redemption_pb2.HistoryEvent.Name(e.event),
                    e.user_id,
                    e.actor_id,
                    e.request_id,
                    e.distribution_id,
                    e.order_reference,
                    e.order_amount,
                    e.discount,
                    e.currency,
                    e.reason,
                ]
            token = page.next_page_token
            if not token:
                return

    written = write_csv(
        args.output,
        [
            "time",
            "code",
            "event",
            "user_id",
            "actor_id",
            "request_id",
            "distribution_id",
            "order_reference",
            "order_amount",
            "discount",
            "currency",
            "reason",
        ],
        [r async for r in rows()],
    )
    if args.output not in (None, "-"):
        print(f"wrote {written:,} entries to {args.output}")


async def _user_id(args, client: Client) -> str:
    if getattr(args, "email", None):
        user = await client.auth.LookupUserByEmail(
            auth_pb2.LookupUserByEmailRequest(email=args.email), metadata=client.metadata
        )
        return user.id
    return args.user


async def assign(args, client: Client) -> None:
    user_id = await _user_id(args, client)
    if args.code:
        coupon = await client.redemption.AssignCoupon(
            redemption_pb2.AssignCouponRequest(code=args.code, user_id=user_id), metadata=client.metadata
        )
    else:
        coupon = await client.redemption.AssignRandomCoupon(
            redemption_pb2.AssignRandomCouponRequest(book_id=args.book_id, user_id=user_id), metadata=client.metadata
        )
    show(coupon)


async def coupons(args, client: Client) -> None:
    user_id = await _user_id(args, client) if (args.email or args.user) else "me"
    rows, token = [], ""
    while True:
        page = await client.redemption.ListUserCoupons(
            redemption_pb2.ListUserCouponsRequest(user_id=user_id, page_size=1000, page_token=token),
            metadata=client.metadata,
        )
        rows += [
            [c.code, c.book_id, redemption_pb2.CouponState.Name(c.state), c.redemption_count] for c in page.coupons
        ]
        token = page.next_page_token
        if not token:
            break
    write_csv(None, ["code", "book_id", "state", "redemption_count"], rows)


async def distribute(args, client: Client) -> int:
    request = pools_pb2.DistributeRequest(
        pool_id=args.pool_id,
        book_id=args.book_id,
        mode=args.mode.upper(),  # the enum value's name
        codes_per_member=args.per_member or 0,
        total_codes=args.total or 0,
    )
    if args.preview:
        plan = await client.pools.PreviewDistribution(request, metadata=client.metadata)
        print(
            f"members {plan.member_count:,}, codes needed {plan.codes_needed:,}, "
            f"available {plan.available_codes:,}, satisfiable: {'yes' if plan.satisfiable else 'no'}"
        )
        if plan.shortfall:
            print(f"  {plan.shortfall}")
        if plan.members_over_limit:
            print(f"  over their limit: {', '.join(plan.members_over_limit)}")
        return 0 if plan.satisfiable else 1
    show(await client.pools.Distribute(request, metadata=client.metadata))
    return 0
