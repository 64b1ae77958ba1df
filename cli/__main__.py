"""`python -m cli <command>`: run with --help for the commands."""

import argparse
import asyncio
import getpass
import os
import sys

import grpc

from cli import commands, webhooks
from cli.output import EXIT_USAGE, describe_error
from kernel.components import DEFAULT_PORTS, SERVICES


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="coupons-cli", description="Operate the Coupon Book Service.")
    for name in SERVICES:
        default = os.environ.get(f"{name.upper()}_ADDR", "").strip() or f"127.0.0.1:{DEFAULT_PORTS[name]}"
        top.add_argument(
            f"--{name}",
            default=default,
            help=f"{name} service address or gRPC target, balanced round robin: host:port, "
            f"ipv4:a:p,b:q (replicas), dns:///name:port (default %(default)s, from {name.upper()}_ADDR when set)",
        )
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("login", help="sign in and save the access token")
    p.add_argument("email")
    p.add_argument("--password", help="asked for when omitted")
    p.set_defaults(run=commands.login)

    books = sub.add_parser("books", help="coupon books").add_subparsers(dest="action", required=True)
    p = books.add_parser("create")
    p.add_argument("--name", required=True)
    p.add_argument("--description")
    p.add_argument("--pattern", help='e.g. "SUMMER-{}-2026"')
    p.add_argument("--length", type=int, help="length of the random part")
    p.add_argument("--multi", action="store_true", help="allow multi-redemption")
    p.add_argument("--max-redemptions", type=int)
    p.add_argument("--max-assignments", type=int)
    p.add_argument("--lock-ttl", type=int)
    p.add_argument("--shared", action="store_true", help="codes without a holder that any signed-in user redeems")
    p.add_argument("--max-total", type=int, help="shared: how often each code may be redeemed in all")
    p.add_argument("--percent-off", help='a percentage discount, e.g. "10"')
    p.add_argument("--amount-off", help='a fixed discount, e.g. "5.00"')
    p.add_argument("--max-discount", help="the most one redemption takes off")
    p.add_argument("--min-order", help="the least order amount")
    p.add_argument("--currency", help="ISO 4217, required with a discount")
    p.add_argument("--rollback-window", type=int, help="seconds a redemption may be rolled back (default 7 days)")
    p.set_defaults(run=commands.books_create)
    p = books.add_parser("list")
    p.add_argument("--name", help="name contains")
    p.set_defaults(run=commands.books_list)
    p = books.add_parser("stats")
    p.add_argument("book_id")
    p.set_defaults(run=commands.books_stats)

    codes = sub.add_parser("codes", help="a book's codes").add_subparsers(dest="action", required=True)
    p = codes.add_parser("generate")
    p.add_argument("book_id")
    p.add_argument("count", type=int)
    p.set_defaults(run=commands.codes_generate)
    p = codes.add_parser("upload", help="upload a CSV file of codes (a 'code' column, or the first column)")
    p.add_argument("book_id")
    p.add_argument("file")
    p.set_defaults(run=commands.codes_upload)
    p = codes.add_parser("export", help="a book's codes as CSV")
    p.add_argument("book_id")
    p.add_argument("--state", choices=["AVAILABLE", "ASSIGNED", "LOCKED", "REDEEMED", "EXPIRED"])
    p.add_argument("-o", "--output", help="file (stdout when omitted)")
    p.set_defaults(run=commands.codes_export)

    p = sub.add_parser("history", help="a code's or a book's history as CSV")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--code")
    target.add_argument("--book", dest="book_id")
    p.add_argument("-o", "--output")
    p.set_defaults(run=commands.history_export)

    p = sub.add_parser("assign", help="assign a random code of a book, or a specific code, to a user")
    p.add_argument("--book", dest="book_id")
    p.add_argument("--code")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user id")
    who.add_argument("--email")
    p.set_defaults(run=commands.assign)

    for name, helping in (
        ("validate", "may you redeem a code now, and what does it give (changes nothing)"),
        ("redeem", "redeem a code (yours, or a shared one), optionally for an order"),
    ):
        p = sub.add_parser(name, help=helping)
        p.add_argument("code")
        p.add_argument("--lock-id")
        p.add_argument("--amount", help='the order amount, e.g. "59.90"')
        p.add_argument("--currency", help="the order's currency (ISO 4217)")
        if name == "redeem":
            p.add_argument("--order", help="the order reference, recorded in history (needed to roll it back)")
        p.set_defaults(run=getattr(commands, name))

    p = sub.add_parser("rollback", help="admin: undo a code's redemption for an order")
    p.add_argument("code")
    p.add_argument("--order", required=True, help="the order reference it was redeemed with")
    p.add_argument("--reason", required=True)
    p.set_defaults(run=commands.rollback)

    p = sub.add_parser("coupons", help="a user's coupons (yours when no user is named)")
    p.add_argument("--user")
    p.add_argument("--email")
    p.set_defaults(run=commands.coupons)

    p = sub.add_parser("events", help="admin: watch the suite's events as JSON lines, until interrupted")
    p.add_argument("--after", default="", help="resume after this event's cursor")
    p.add_argument("--from-oldest", action="store_true", help="start from the oldest event kept, not from now")
    p.add_argument("--type", action="append", default=[], help="only this type (repeatable), e.g. coupon.redeemed")
    p.add_argument("--book", default="", help="only this book's events")
    p.set_defaults(run=commands.events)

    p = sub.add_parser("distribute", help="distribute a book's codes to a pool")
    p.add_argument("pool_id")
    p.add_argument("book_id")
    p.add_argument("--mode", choices=["equal", "random"], required=True)
    p.add_argument("--per-member", type=int, help="EQUAL: codes per member")
    p.add_argument("--total", type=int, help="RANDOM: codes in all; EQUAL: divided over the members, rounded down")
    p.add_argument("--preview", action="store_true", help="show the plan without assigning")
    p.set_defaults(run=commands.distribute)

    webhooks.add_parser(sub)
    return top


async def run(args) -> int:
    client = commands.Client({name: getattr(args, name) for name in SERVICES})
    try:
        return await args.run(args, client) or 0
    except grpc.aio.AioRpcError as error:
        text, code = describe_error(error)
        print(text, file=sys.stderr)
        return code
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "login" and not args.password:
        args.password = getpass.getpass("password: ")
    if args.command == "assign" and not (args.book_id or args.code):
        print("error: name a --book (random code) or a --code", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:  # how `events` and `webhooks listen` end
        return 130


if __name__ == "__main__":
    sys.exit(main())
