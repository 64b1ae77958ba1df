"""The hot shared code (issue 12): 256 and then 1,000 distinct users redeem one shared code at once, its
global cap half of them. Figures: throughput, p99, refusals by kind, and whether the count is exact (the
client's successes = the cap = the ledger's count = its REDEEMED entries).

Every caller is a different user (per-user cap 1), so the only right refusal is the cap's
(FAILED_PRECONDITION SHARED_LIMIT_REACHED); any ABORTED (busy) or UNAVAILABLE is a caller within the caps
refused for a concurrency reason, which the design rules out (docs/architecture.md, "Shared codes").
"""

import uuid

from bench import checks
from bench.load import median
from coupons.books.v1 import books_pb2

CALLERS = (256, 1000)
SECTION = "10. Hot shared code"


async def _shared_book(bench, cap: int) -> tuple[str, str]:
    """(book_id, code): a shared book with one uploaded code of global cap `cap`, once per user."""
    book_id = await bench.create_book("shared", shared=True, max_redemptions_total=cap)
    code = f"SHARED-{uuid.uuid4().hex[:12].upper()}"
    await bench.books.ImportCodes(
        books_pb2.ImportCodesRequest(book_id=book_id, codes=[code]), metadata=bench.stack.admin_metadata()
    )
    return book_id, code


async def shared_code(bench) -> None:
    for callers in CALLERS:
        cap = callers // 2
        print(f"Hot shared code: {callers} users at once on one shared code of cap {cap}", flush=True)
        runs = []
        for run in range(bench.config.runs):
            book_id, code = await _shared_book(bench, cap)
            users = bench.stack.new_users(callers)
            result = bench.load(
                "shared",
                kind="hot",
                target=bench.stack.address("redemption"),
                callers=[{"token": bench.stack.token(user), "items": [code]} for user in users],
                processes=bench.config.processes,
            )
            ok = result.outcomes.get("OK", 0)
            totals = checks.book_totals(bench.db, book_id)
            found = checks.check_book(bench.db, book_id, redemptions=ok)
            found["successes_not_the_cap"] = abs(ok - cap)
            found["concurrency_refusals"] = sum(
                n for o, n in result.outcomes.items() if o not in ("OK", "FAILED_PRECONDITION")
            )
            bench.record_check(f"shared {callers} run {run + 1}", found)
            runs.append((result, ok, totals))
            print(
                f"  run {run + 1}: {ok} succeeded, ledger {totals['redemptions']} redemptions / "
                f"{totals['redeemed_events']} REDEEMED entries; outcomes {result.outcomes}; "
                f"{result.throughput:.0f} calls/s, p99 {result.percentile(99):.1f} ms",
                flush=True,
            )
        label = f"{callers} users on one shared code (cap {cap})"
        bench.figure(
            key=f"shared.{callers}.throughput",
            section=SECTION,
            label=f"{label}: throughput (every call, first to last)",
            unit="calls/s",
            value=median([r.throughput for r, *_ in runs]),
            runs=[round(r.throughput, 1) for r, *_ in runs],
        )
        bench.figure(
            key=f"shared.{callers}.p99",
            section=SECTION,
            label=f"{label}: p99",
            unit="ms",
            value=median([r.percentile(99) for r, *_ in runs]),
            runs=[round(r.percentile(99), 2) for r, *_ in runs],
        )
        bench.figure(
            key=f"shared.{callers}.exact",
            section=SECTION,
            label=f"{label}: successes (client = ledger = cap)",
            unit="redeems",
            value=median([ok for _, ok, _ in runs]),
            runs=[ok for _, ok, _ in runs],
            target="successes == cap == ledger count == REDEEMED entries; no refusal but the cap's",
            met=all(
                ok == cap == t["redemptions"] == t["redeemed_events"]
                and set(r.outcomes) <= {"OK", "FAILED_PRECONDITION"}
                for r, ok, t in runs
            ),
            note="refusals per run (FAILED_PRECONDITION: the cap; anything else: a concurrency refusal): "
            + "; ".join(str({o: n for o, n in r.outcomes.items() if o != "OK"}) for r, *_ in runs),
        )
