"""Data access for the redemption schema. All SQL of the redemption service lives here."""

import hashlib

import psycopg
import psycopg_pool
import sqlalchemy as sa
from psycopg.rows import class_row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kernel import db
from kernel.idempotency import IdempotencyStore
from services.redemption.model import (
    BookCounts,
    BookRules,
    Change,
    CouponRow,
    CouponState,
    HistoryRow,
    LedgerEvent,
    Order,
    Outcome,
)

SCHEMA = "redemption"

# The one definition of a live lock: an expired lock is no lock, in every read and write.
LOCK_LIVE = "coalesce(c.lock_expires_at > now(), false)"
# The one definition of an expired code (read as EXPIRED): past its book's valid_until with a use left.
EXPIRED = "(c.state <> 'REDEEMED' AND coalesce(now() >= r.valid_until, false))"
# How often a coupon may be redeemed in all: a shared code's global cap, a personal code's per-user limit.
MAX_REDEMPTIONS = "CASE WHEN c.shared THEN r.max_redemptions_total ELSE r.max_redemptions END"
COUPON_COLUMNS = f"""c.code, c.book_id::text AS book_id, c.state, c.user_id::text AS user_id,
    c.lock_id::text AS lock_id, c.lock_expires_at, {LOCK_LIVE} AS locked, {EXPIRED} AS expired,
    c.redemption_count, {MAX_REDEMPTIONS} AS max_redemptions, c.assigned_at, c.last_redeemed_at, c.shared,
    r.book_name"""
RULES_COLUMNS = """book_id::text AS book_id, allow_multi_redemption, max_redemptions, max_assignments_per_user,
    lock_ttl_seconds, valid_from, valid_until, archived, version, allow_self_claim, shared, max_redemptions_total,
    discount_type, percent_off, amount_off, max_discount, min_order_amount, currency, rollback_window_seconds,
    book_name"""
# How long a redeem of a shared code waits for its turn on a hot code before it is refused as busy.
SHARED_WAIT_MS = 5_000


def advisory_key(code: str) -> int:
    """The 64-bit advisory lock key of a code: the first 8 bytes of its namespaced sha256, signed."""
    digest = hashlib.sha256(f"redemption.coupon:{code}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _state_condition(state: str) -> str:
    """SQL for 'the coupon reads as :state' (Coupon.of): REDEEMED as stored, then EXPIRED, then LOCKED."""
    match state:
        case "REDEEMED":
            return "c.state = 'REDEEMED'"
        case "EXPIRED":
            return EXPIRED
        case "LOCKED":
            return f"{LOCK_LIVE} AND NOT {EXPIRED}"
    return f"c.state = '{CouponState(state).value}' AND NOT {LOCK_LIVE} AND NOT {EXPIRED}"


def _coupon_filter(user_id: str | None, book_id: str | None, state: str | None) -> tuple[list[str], dict[str, object]]:
    """The WHERE conditions (over coupons c joined to book_rules r) and parameters of a coupon list."""
    conditions: list[str] = []
    params: dict[str, object] = {}
    if user_id is not None:
        conditions.append("c.user_id = CAST(:user_id AS uuid)")
        params["user_id"] = user_id
    if book_id is not None:
        conditions.append("c.book_id = CAST(:book_id AS uuid)")
        params["book_id"] = book_id
    if state is not None:
        conditions.append(_state_condition(state))
    return conditions, params


def _history_subject(code: str | None, book_id: str | None) -> tuple[str, str | None]:
    """The condition of a code's history (by code) or a book's (by book_id), and its value."""
    if code is not None:
        return "code = :subject", code
    return "book_id = CAST(:subject AS uuid)", book_id


# A concurrent call with the same request id committed first (redemption.remember): asked again, the
# function replays that call's answer or refuses the id.
REQUEST_ID_TAKEN = "CB409"
CHANGE_CODE = f"SELECT * FROM {SCHEMA}.change_code(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
ROLLBACK = f"SELECT * FROM {SCHEMA}.rollback(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
REDEEM = f"SELECT * FROM {SCHEMA}.redeem(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
ASSIGN_RANDOM = f"SELECT * FROM {SCHEMA}.assign_random(%s, %s, %s, %s, %s, %s, %s, %s)"


class RedemptionRepository:
    """SQLAlchemy for the ledger's reads and batch changes; for the hot operations, one call each of a
    server-side function (migration 0004) on a plain psycopg autocommit connection: see docs/architecture.md."""

    def __init__(self, engine: AsyncEngine, statements: psycopg_pool.AsyncConnectionPool):
        self.engine = engine
        self.statements = statements
        self.idempotency = IdempotencyStore(SCHEMA)

    async def _call(self, statement: str, params: tuple) -> Outcome:
        try:
            return await self._call_once(statement, params)
        except psycopg.Error as error:
            if error.sqlstate != REQUEST_ID_TAKEN:
                raise
        return await self._call_once(statement, params)

    async def _call_once(self, statement: str, params: tuple) -> Outcome:
        async with db.statement_connection(self.statements) as conn:
            cursor = conn.cursor(row_factory=class_row(Outcome))
            try:
                await cursor.execute(statement, params)
            except psycopg.errors.LockNotAvailable:  # a shared code's turn did not come within SHARED_WAIT_MS
                return Outcome("BUSY", code=params[1])
            row = await cursor.fetchone()
        if row is None:  # the functions always answer one row
            raise LookupError(f"{statement} answered no row")
        return row

    async def change_code(
        self,
        change: Change,
        code: str,
        holder: str | None,
        actor_id: str,
        scope: str,
        request_id: str,
        request_hash: bytes,
        target: str | None = None,
        lock_id: str | None = None,
    ) -> Outcome:
        """LOCK, UNLOCK or ASSIGN one code in one round trip; holder None: an admin's call."""
        return await self._call(
            CHANGE_CODE,
            (
                change.value,
                code,
                advisory_key(code),
                holder,
                target,
                lock_id,
                actor_id,
                scope,
                request_id,
                request_hash,
            ),
        )

    async def redeem(
        self,
        code: str,
        holder: str | None,
        caller: str,
        lock_id: str | None,
        order: Order,
        actor_id: str,
        scope: str,
        request_id: str,
        request_hash: bytes,
        validate: bool = False,
    ) -> Outcome:
        """Redeems a personal or shared code for the order in one round trip; with validate, only answers
        whether it would and with what discount (changes nothing, waits for no one)."""
        return await self._call(
            REDEEM,
            (
                code,
                advisory_key(code),
                holder,
                caller,
                lock_id,
                actor_id,
                scope,
                request_id,
                request_hash,
                SHARED_WAIT_MS,
                validate,
                order.reference,
                order.amount,
                order.currency,
                order.exponent,
            ),
        )

    async def rollback(
        self,
        code: str,
        order_reference: str,
        reason: str,
        actor_id: str,
        scope: str,
        request_id: str,
        request_hash: bytes,
    ) -> Outcome:
        """Undoes the code's latest redemption for the order in one round trip (waiting its turn on the code)."""
        return await self._call(
            ROLLBACK,
            (
                code,
                advisory_key(code),
                order_reference,
                reason,
                actor_id,
                scope,
                request_id,
                request_hash,
                SHARED_WAIT_MS,
            ),
        )

    async def assign_random(
        self,
        book_id: str,
        user_id: str,
        self_claim: bool,
        start: float,
        actor_id: str,
        scope: str,
        request_id: str,
        request_hash: bytes,
    ) -> Outcome:
        return await self._call(
            ASSIGN_RANDOM, (book_id, user_id, self_claim, start, actor_id, scope, request_id, request_hash)
        )

    def transaction(self):
        return db.transaction(self.engine)

    # book rules

    async def put_rules(self, conn: AsyncConnection, rules: BookRules) -> BookRules:
        """Stores the rules unless a newer or equal version is stored; returns what is stored now."""
        values = {k: getattr(rules, k) for k in BookRules.__dataclass_fields__}
        await conn.execute(
            sa.text(f"""
            INSERT INTO {SCHEMA}.book_rules AS b (book_id, allow_multi_redemption, max_redemptions,
                max_assignments_per_user, lock_ttl_seconds, valid_from, valid_until, archived, version,
                allow_self_claim, shared, max_redemptions_total, discount_type, percent_off, amount_off,
                max_discount, min_order_amount, currency, rollback_window_seconds, book_name)
            VALUES (:book_id, :allow_multi_redemption, :max_redemptions, :max_assignments_per_user,
                :lock_ttl_seconds, :valid_from, :valid_until, :archived, :version, :allow_self_claim,
                :shared, :max_redemptions_total, :discount_type, :percent_off, :amount_off, :max_discount,
                :min_order_amount, :currency, :rollback_window_seconds, :book_name)
            ON CONFLICT (book_id) DO UPDATE SET
                allow_multi_redemption = excluded.allow_multi_redemption,
                max_redemptions = excluded.max_redemptions,
                max_assignments_per_user = excluded.max_assignments_per_user,
                lock_ttl_seconds = excluded.lock_ttl_seconds, valid_from = excluded.valid_from,
                valid_until = excluded.valid_until, archived = excluded.archived, version = excluded.version,
                allow_self_claim = excluded.allow_self_claim, max_redemptions_total = excluded.max_redemptions_total,
                discount_type = excluded.discount_type, percent_off = excluded.percent_off,
                amount_off = excluded.amount_off, max_discount = excluded.max_discount,
                min_order_amount = excluded.min_order_amount, currency = excluded.currency,
                rollback_window_seconds = excluded.rollback_window_seconds, book_name = excluded.book_name,
                updated_at = now()
            WHERE b.version < excluded.version"""),
            values,
        )
        # A coupon is REDEEMED exactly when no redemption is left, also after the book's limit changed; a
        # book's kind (shared or personal) never changes, so the upsert leaves it as it was created.
        await conn.execute(
            sa.text(f"""UPDATE {SCHEMA}.coupons c
            SET state = CASE WHEN c.redemption_count >= {MAX_REDEMPTIONS} THEN 'REDEEMED'
                WHEN c.shared THEN 'AVAILABLE' ELSE 'ASSIGNED' END
            FROM {SCHEMA}.book_rules r WHERE r.book_id = c.book_id AND c.book_id = :book_id
                AND (c.shared OR c.state IN ('ASSIGNED', 'REDEEMED'))
                AND (c.state = 'REDEEMED') <> (c.redemption_count >= {MAX_REDEMPTIONS})"""),
            {"book_id": rules.book_id},
        )
        stored = await self.rules(conn, rules.book_id)
        if stored is None:  # inserted above unless already there
            raise LookupError(f"the rules of book {rules.book_id} vanished after their upsert")
        return stored

    async def rules(self, conn: AsyncConnection, book_id: str) -> BookRules | None:
        row = (
            await conn.execute(
                sa.text(f"SELECT {RULES_COLUMNS} FROM {SCHEMA}.book_rules WHERE book_id = :b"), {"b": book_id}
            )
        ).first()
        return BookRules(**row._mapping) if row else None

    async def book_refusal(self, conn: AsyncConnection, book_id: str) -> tuple[BookRules, str] | None:
        """The rules and why the book refuses changes now ('' while open: redemption.book_refusal decides)."""
        statement = sa.text(f"""SELECT {RULES_COLUMNS}, {SCHEMA}.book_refusal(b) AS refusal
            FROM {SCHEMA}.book_rules b WHERE book_id = :b""")
        row = (await conn.execute(statement, {"b": book_id})).first()
        if row is None:
            return None
        values = row._asdict()
        refusal = values.pop("refusal")
        return BookRules(**values), refusal

    # coupons

    async def coupon(self, conn: AsyncConnection, code: str) -> CouponRow | None:
        statement = sa.text(f"""SELECT {COUPON_COLUMNS} FROM {SCHEMA}.coupons c
            JOIN {SCHEMA}.book_rules r USING (book_id) WHERE c.code = :code""")
        row = (await conn.execute(statement, {"code": code})).first()
        return CouponRow(**row._mapping) if row else None

    async def add_codes(self, conn: AsyncConnection, book_id: str, codes: list[str]) -> set[str]:
        """Inserts the codes as AVAILABLE (each with a fresh random key); returns the ones inserted."""
        statement = sa.text(f"""INSERT INTO {SCHEMA}.coupons (code, book_id, shared)
            SELECT code, r.book_id, r.shared FROM unnest(CAST(:codes AS text[])) AS code
                JOIN {SCHEMA}.book_rules r ON r.book_id = CAST(:book_id AS uuid)
            ON CONFLICT DO NOTHING RETURNING code""")
        return set((await conn.execute(statement, {"book_id": book_id, "codes": codes})).scalars())

    async def pick_available(self, conn: AsyncConnection, book_id: str, start: float, count: int) -> list[str]:
        """Locks up to `count` AVAILABLE codes: the first keys at or after `start`, wrapping around.

        O(log n) through the partial index; SKIP LOCKED lets concurrent pickers pass each other.
        """
        picked: list[str] = []
        for condition in ("rand_key >= :start", "rand_key < :start"):
            if len(picked) == count:
                break
            statement = sa.text(f"""SELECT code FROM {SCHEMA}.coupons
                WHERE book_id = :book_id AND state = 'AVAILABLE' AND {condition}
                ORDER BY rand_key LIMIT :limit FOR UPDATE SKIP LOCKED""")
            picked += (
                await conn.execute(statement, {"book_id": book_id, "start": start, "limit": count - len(picked)})
            ).scalars()
        return picked

    async def count_available(self, conn: AsyncConnection, book_id: str) -> int:
        statement = sa.text(f"SELECT count(*) FROM {SCHEMA}.coupons WHERE book_id = :b AND state = 'AVAILABLE'")
        return (await conn.execute(statement, {"b": book_id})).scalar_one()

    async def assign(
        self,
        conn: AsyncConnection,
        codes: list[str],
        user_ids: list[str],
        actor_id: str,
        request_id: str,
        distribution_id: str,
    ) -> int:
        """Gives each code (locked by the caller, AVAILABLE) to the user at the same position and appends
        its ASSIGNED history, in one statement; how many were assigned. Nothing per row comes back: a
        distribution of 100,000 codes would otherwise build as many rows in this process."""
        statement = sa.text(f"""WITH assigned AS (
                UPDATE {SCHEMA}.coupons c SET state = 'ASSIGNED', user_id = v.user_id, assigned_at = now()
                FROM unnest(CAST(:codes AS text[]), CAST(:user_ids AS uuid[])) AS v(code, user_id)
                WHERE c.code = v.code AND c.state = 'AVAILABLE' RETURNING c.code, c.book_id, c.user_id),
            logged AS (
                INSERT INTO {SCHEMA}.history (code, book_id, event, user_id, actor_id, request_id, distribution_id)
                SELECT code, book_id, :event, user_id, :actor_id, :request_id, :distribution_id FROM assigned
                RETURNING 1)
            SELECT count(*) FROM logged""")
        params = {
            "codes": codes,
            "user_ids": user_ids,
            "event": LedgerEvent.ASSIGNED.value,
            "actor_id": actor_id,
            "request_id": request_id,
            "distribution_id": distribution_id,
        }
        return (await conn.execute(statement, params)).scalar_one()

    async def list_coupons(
        self,
        conn: AsyncConnection,
        limit: int,
        *,
        user_id: str | None = None,
        book_id: str | None = None,
        state: str | None = None,
        after: dict | None = None,
    ) -> list[CouponRow]:
        """A user's coupons ordered by code, or a book's by (state, code): both follow an index."""
        conditions, params = _coupon_filter(user_id, book_id, state)
        order = "c.code" if user_id is not None else "c.state, c.code"
        if after is not None:
            conditions.append(f"({order}) > ({', '.join(':after_' + k for k in after)})")
            params.update({f"after_{k}": v for k, v in after.items()})
        statement = sa.text(f"""SELECT {COUPON_COLUMNS} FROM {SCHEMA}.coupons c
            JOIN {SCHEMA}.book_rules r USING (book_id)
            WHERE {" AND ".join(conditions)} ORDER BY {order} LIMIT :limit""")
        return [CouponRow(**row._mapping) for row in await conn.execute(statement, {**params, "limit": limit})]

    async def count_coupons(
        self, conn: AsyncConnection, *, user_id: str | None = None, book_id: str | None = None, state: str | None = None
    ) -> int:
        """How many coupons list_coupons would list over all its pages."""
        conditions, params = _coupon_filter(user_id, book_id, state)
        statement = sa.text(f"""SELECT count(*) FROM {SCHEMA}.coupons c JOIN {SCHEMA}.book_rules r USING (book_id)
            WHERE {" AND ".join(conditions)}""")
        return (await conn.execute(statement, params)).scalar_one()

    async def book_counts(self, conn: AsyncConnection, book_id: str) -> BookCounts:
        """Counted from the ledger itself (one pass over the book's rows): never drifts, no hot counter row."""
        by_state = ",\n".join(
            f"count(*) FILTER (WHERE {_state_condition(state)}) AS {state.lower()}"
            for state in ("AVAILABLE", "ASSIGNED", "LOCKED", "REDEEMED", "EXPIRED")
        )
        statement = sa.text(f"""SELECT count(*) AS total, {by_state},
                coalesce(sum(c.redemption_count), 0) AS redemptions
            FROM {SCHEMA}.coupons c JOIN {SCHEMA}.book_rules r USING (book_id) WHERE c.book_id = :b""")
        return BookCounts(**(await conn.execute(statement, {"b": book_id})).one()._mapping)

    # per-(user, book) holdings: the atomic limit on assignments

    async def reserve_holdings(
        self, conn: AsyncConnection, book_id: str, counts: dict[str, int], limit: int
    ) -> dict[str, int]:
        """Adds counts[user] to each user's holding unless it would pass `limit` (0: none).

        Conditional updates, never count-then-insert; returns {user: held now} for the users that fit.
        Rows are inserted and locked in user order so concurrent bulk assignments do not deadlock.
        """
        users = sorted(counts)
        await conn.execute(
            sa.text(f"""INSERT INTO {SCHEMA}.holdings (book_id, user_id)
            SELECT CAST(:b AS uuid), u FROM unnest(CAST(:users AS uuid[])) AS u ORDER BY u
            ON CONFLICT DO NOTHING"""),
            {"b": book_id, "users": users},
        )
        if len(users) > 1:  # an UPDATE ... FROM has no defined row order, so lock the rows in order first
            await conn.execute(
                sa.text(f"""SELECT 1 FROM {SCHEMA}.holdings
                WHERE book_id = :b AND user_id = ANY(CAST(:users AS uuid[])) ORDER BY user_id FOR UPDATE"""),
                {"b": book_id, "users": users},
            )
        statement = sa.text(f"""UPDATE {SCHEMA}.holdings h SET held = h.held + v.n
            FROM unnest(CAST(:users AS uuid[]), CAST(:ns AS int[])) AS v(user_id, n)
            WHERE h.book_id = CAST(:b AS uuid) AND h.user_id = v.user_id AND (:limit = 0 OR h.held + v.n <= :limit)
            RETURNING h.user_id::text, h.held""")
        rows = await conn.execute(
            statement, {"b": book_id, "users": users, "ns": [counts[u] for u in users], "limit": limit}
        )
        return {row.user_id: row.held for row in rows}

    async def holdings(self, conn: AsyncConnection, book_id: str, user_ids: list[str]) -> dict[str, int]:
        statement = sa.text(f"""SELECT user_id::text, held FROM {SCHEMA}.holdings
            WHERE book_id = :b AND user_id = ANY(CAST(:users AS uuid[]))""")
        return {row.user_id: row.held for row in await conn.execute(statement, {"b": book_id, "users": user_ids})}

    # history

    async def count_history(self, conn: AsyncConnection, *, code: str | None = None, book_id: str | None = None) -> int:
        subject, value = _history_subject(code, book_id)
        statement = sa.text(f"SELECT count(*) FROM {SCHEMA}.history WHERE {subject}")
        return (await conn.execute(statement, {"subject": value})).scalar_one()

    async def list_history(
        self, conn: AsyncConnection, limit: int, after_id: int, *, code: str | None = None, book_id: str | None = None
    ) -> list[HistoryRow]:
        subject, value = _history_subject(code, book_id)
        statement = sa.text(f"""SELECT id, code, book_id::text AS book_id, event, user_id::text AS user_id,
                actor_id, request_id, distribution_id, created_at, order_reference, order_amount, discount, currency,
                reason, undoes
            FROM {SCHEMA}.history WHERE {subject} AND id > :after ORDER BY id LIMIT :limit""")
        rows = await conn.execute(statement, {"subject": value, "after": after_id, "limit": limit})
        return [HistoryRow(**row._mapping) for row in rows]
