"""What every run checks afterwards in the database: nothing over-redeemed, nothing assigned twice.

Scoped to one book (index-backed, cheap enough after every run) and, once at the end, over the whole
ledger. Each check returns the number of offending rows: every one must be 0.
"""

import psycopg

# A code's cap: a shared code's global one, a personal code's per-user limit (as in the ledger).
MAX_REDEMPTIONS = "CASE WHEN c.shared THEN r.max_redemptions_total ELSE r.max_redemptions END"
NET_REDEMPTIONS = (
    "count(*) FILTER (WHERE event = 'REDEEMED_EVENT') - count(*) FILTER (WHERE event = 'ROLLED_BACK_EVENT')"
)

BOOK_CHECKS = {
    # a coupon redeemed more often than its book allows (a shared code: its global cap)
    "over_redeemed": f"""SELECT count(*) FROM redemption.coupons c JOIN redemption.book_rules r USING (book_id)
        WHERE c.book_id = %(b)s AND c.redemption_count > {MAX_REDEMPTIONS}""",
    # redemption_count and the REDEEMED history entries (less those rolled back) disagree (per code)
    "redeemed_history_mismatch": f"""SELECT count(*) FROM redemption.coupons c
        LEFT JOIN (SELECT code, {NET_REDEMPTIONS} AS n FROM redemption.history
                   WHERE book_id = %(b)s GROUP BY code) h USING (code)
        WHERE c.book_id = %(b)s AND coalesce(h.n, 0) <> c.redemption_count""",
    # a code handed out more than once
    "assigned_twice": """SELECT count(*) FROM (SELECT code FROM redemption.history
        WHERE book_id = %(b)s AND event = 'ASSIGNED_EVENT' GROUP BY code HAVING count(*) > 1) twice""",
    # a held coupon without exactly one assignment on record, or an assignment on record for a free code
    "holder_history_mismatch": """SELECT count(*) FROM redemption.coupons c
        LEFT JOIN (SELECT code, count(*) AS n, min(user_id::text) AS first_user, max(user_id::text) AS last_user
                   FROM redemption.history WHERE book_id = %(b)s AND event = 'ASSIGNED_EVENT' GROUP BY code) h
             USING (code)
        WHERE c.book_id = %(b)s AND ((c.user_id IS NULL) <> (h.n IS NULL)
              OR h.first_user <> c.user_id::text OR h.last_user <> c.user_id::text)""",
    # the per-(user, book) holding counters disagree with the coupons held
    "holdings_mismatch": """WITH held AS (SELECT user_id, count(*) AS n FROM redemption.coupons
                WHERE book_id = %(b)s AND user_id IS NOT NULL GROUP BY user_id),
            counters AS (SELECT user_id, held FROM redemption.holdings WHERE book_id = %(b)s)
        SELECT count(*) FROM held FULL JOIN counters USING (user_id)
        WHERE coalesce(held.n, 0) <> coalesce(counters.held, 0)""",
}

# Over the whole ledger (once, at the end of the bench)
GLOBAL_CHECKS = {
    "over_redeemed": f"""SELECT count(*) FROM redemption.coupons c JOIN redemption.book_rules r USING (book_id)
        WHERE c.redemption_count > {MAX_REDEMPTIONS}""",
    "redeemed_history_mismatch": f"""SELECT count(*) FROM redemption.coupons c
        FULL JOIN (SELECT code, {NET_REDEMPTIONS} AS n FROM redemption.history GROUP BY code) h USING (code)
        WHERE coalesce(h.n, 0) <> coalesce(c.redemption_count, 0)""",
    "assigned_twice": """SELECT count(*) FROM (SELECT code FROM redemption.history WHERE event = 'ASSIGNED_EVENT'
        GROUP BY code HAVING count(*) > 1) twice""",
    "holdings_mismatch": """WITH held AS (SELECT book_id, user_id, count(*) AS n FROM redemption.coupons
                WHERE user_id IS NOT NULL GROUP BY book_id, user_id)
        SELECT count(*) FROM held FULL JOIN redemption.holdings h USING (book_id, user_id)
        WHERE coalesce(held.n, 0) <> coalesce(h.held, 0)""",
}


def book_totals(conn: psycopg.Connection, book_id: str) -> dict[str, int]:
    row = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE user_id IS NOT NULL),
            coalesce(sum(redemption_count), 0),
            (SELECT count(*) FROM redemption.history WHERE book_id = %(b)s AND event = 'REDEEMED_EVENT'),
            (SELECT count(*) FROM redemption.history WHERE book_id = %(b)s AND event = 'ASSIGNED_EVENT')
        FROM redemption.coupons WHERE book_id = %(b)s""",
        {"b": book_id},
    ).fetchone()
    return {
        "codes": row[0],
        "held": row[1],
        "redemptions": row[2],
        "redeemed_events": row[3],
        "assigned_events": row[4],
    }


def _robust_plans(conn: psycopg.Connection) -> None:
    """Right after a bulk write the statistics are stale and the planner may pick a nested loop over a
    100,000-row book (minutes); the checks only need hash joins, so analyze and rule nested loops out."""
    conn.execute("ANALYZE redemption.coupons, redemption.history, redemption.holdings")
    conn.execute("SET enable_nestloop = off")


def check_book(
    conn: psycopg.Connection,
    book_id: str,
    *,
    redemptions: int | None = None,
    assignments: int | None = None,
    skip: tuple[str, ...] = (),
) -> dict[str, int]:
    """The book's violations (all 0 when sound), with the client's own count of successes compared to the
    ledger's when given (a difference is a violation too)."""
    _robust_plans(conn)
    found = {
        name: conn.execute(sql, {"b": book_id}).fetchone()[0] for name, sql in BOOK_CHECKS.items() if name not in skip
    }
    totals = book_totals(conn, book_id)
    if redemptions is not None:
        found["client_vs_ledger_redemptions"] = abs(totals["redemptions"] - redemptions)
    if assignments is not None:
        found["client_vs_ledger_assignments"] = abs(totals["assigned_events"] - assignments)
    return found


def check_everything(conn: psycopg.Connection) -> dict[str, int]:
    _robust_plans(conn)
    return {name: conn.execute(sql).fetchone()[0] for name, sql in GLOBAL_CHECKS.items()}


def clean(found: dict[str, int]) -> bool:
    return all(v == 0 for v in found.values())
