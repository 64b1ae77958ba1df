"""Section 6: many concurrent redeem attempts on one multi-redemption personal code: the count stays exact
(client successes = ledger count = REDEEMED entries, never over the book's limit); refusals are counted."""

from bench import checks
from bench.core import Bench
from bench.load import median


async def hot_code(bench: Bench) -> None:
    print(f"Hot code: {bench.config.hot_attempts} concurrent redeem attempts on one multi-redemption code", flush=True)
    runs = []
    for run in range(bench.config.runs):
        book_id = await bench.create_book(
            "hot", allow_multi_redemption=True, max_redemptions_per_user=bench.config.hot_max_redemptions
        )
        (user,) = bench.stack.new_users(1)
        await bench.generate(book_id, 1)
        (code,) = (await bench.bulk_assign(book_id, [user], 1))[user]
        token = bench.stack.token(user)
        result = bench.load(
            "hot",
            kind="hot",
            target=bench.stack.address("redemption"),
            callers=[{"token": token, "items": [code]} for _ in range(bench.config.hot_attempts)],
            processes=bench.config.processes,
        )
        ok = result.outcomes.get("OK", 0)
        totals = checks.book_totals(bench.db, book_id)
        found = checks.check_book(bench.db, book_id, redemptions=ok)
        refused = bench.config.hot_attempts - ok
        # every attempt either redeemed or was refused; successes can never pass the book's limit
        found["successes_over_limit"] = max(0, ok - bench.config.hot_max_redemptions)
        found["attempts_unaccounted"] = abs(bench.config.hot_attempts - sum(result.outcomes.values()))
        found["unexpected_outcomes"] = sum(
            n for o, n in result.outcomes.items() if o not in ("OK", "ABORTED", "FAILED_PRECONDITION")
        )
        bench.record_check(f"hot run {run + 1}", found)
        runs.append((result, ok, refused, totals))
        print(
            f"  run {run + 1}: {ok} succeeded, ledger counts {totals['redemptions']} redemptions "
            f"/ {totals['redeemed_events']} REDEEMED entries; outcomes {result.outcomes}; "
            f"p99 {result.percentile(99):.1f} ms",
            flush=True,
        )
    label = f"{bench.config.hot_attempts} attempts on one code (max {bench.config.hot_max_redemptions})"
    bench.figure(
        key="hot.p99",
        section="6. Hot code",
        label=f"{label}: p99",
        unit="ms",
        value=median([r.percentile(99) for r, *_ in runs]),
        runs=[round(r.percentile(99), 2) for r, *_ in runs],
    )
    bench.figure(
        key="hot.successes",
        section="6. Hot code",
        label=f"{label}: successes (client = ledger)",
        unit="redeems",
        value=median([ok for _, ok, _, _ in runs]),
        runs=[ok for _, ok, _, _ in runs],
        target="client count == ledger count == REDEEMED entries, <= limit",
        met=all(
            ok == t["redemptions"] == t["redeemed_events"] and ok <= bench.config.hot_max_redemptions
            for _, ok, _, t in runs
        ),
        note="refusals per run (ABORTED: the code was busy): "
        + "; ".join(str({o: n for o, n in r.outcomes.items() if o != "OK"}) for r, *_ in runs),
    )
