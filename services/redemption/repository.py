"""Data access for the redemption schema. All SQL of the redemption service lives here."""

import datetime as dt
import hashlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kernel import db
from kernel.idempotency import IdempotencyStore

SCHEMA = "redemption"

# The one definition of a live lock: an expired lock is no lock, in every read and write.
LOCK_LIVE = "coalesce(c.lock_expires_at > now(), false)"
COUPON_COLUMNS = f"""c.code, c.book_id::text AS book_id, c.state, c.user_id::text AS user_id,
    c.lock_id::text AS lock_id, c.lock_expires_at, {LOCK_LIVE} AS locked, c.redemption_count,
    r.max_redemptions, c.assigned_at, c.last_redeemed_at"""
RULES_COLUMNS = """book_id::text AS book_id, allow_multi_redemption, max_redemptions, max_assignments_per_user,
    lock_ttl_seconds, valid_from, valid_until, archived, version, allow_self_claim"""


@dataclass(frozen=True)
class BookRules:
    book_id: str
    allow_multi_redemption: bool
    max_redemptions: int
    max_assignments_per_user: int  # 0: no limit
    lock_ttl_seconds: int
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    archived: bool
    version: int
    allow_self_claim: bool = False  # a USER may assign random codes of the book to themself


@dataclass(frozen=True)
class CouponRow:
    code: str
    book_id: str
    state: str  # AVAILABLE, ASSIGNED or REDEEMED: the ledger state without the lock
    user_id: str | None
    lock_id: str | None
    lock_expires_at: dt.datetime | None
    locked: bool  # the lock is live (not expired)
    redemption_count: int
    max_redemptions: int
    assigned_at: dt.datetime | None
    last_redeemed_at: dt.datetime | None


@dataclass(frozen=True)
class HistoryEvent:
    code: str
    book_id: str
    event: str
    user_id: str | None
    actor_id: str
    request_id: str = ""
    distribution_id: str = ""


@dataclass(frozen=True)
class HistoryRow:
    id: int
    code: str
    book_id: str
    event: str
    user_id: str | None
    actor_id: str
    request_id: str
    distribution_id: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Stamp:
    """The history entry a single-coupon change writes with it: what happened, who did it, in which request."""

    event: str
    actor_id: str
    request_id: str


@dataclass(frozen=True)
class BookCounts:
    total: int
    available: int
    assigned: int
    locked: int
    redeemed: int
    redemptions: int


def advisory_key(code: str) -> int:
    """The 64-bit advisory lock key of a code: the first 8 bytes of its namespaced sha256, signed."""
    digest = hashlib.sha256(f"redemption.coupon:{code}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _state_condition(state: str) -> str:
    """SQL for 'the coupon reads as :state', given that a live lock reads as LOCKED."""
    return LOCK_LIVE if state == "LOCKED" else f"c.state = :state AND NOT {LOCK_LIVE}"


class RedemptionRepository:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.idempotency = IdempotencyStore(SCHEMA)

    def transaction(self):
        return db.transaction(self.engine)

    async def try_lock_code(self, conn: AsyncConnection, code: str) -> bool:
        """Serializes operations on one code; transaction-scoped, so it cannot outlive the transaction."""
        statement = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
        return (await conn.execute(statement, {"key": advisory_key(code)})).scalar_one()

    # book rules

    async def put_rules(self, conn: AsyncConnection, rules: BookRules) -> BookRules:
        """Stores the rules unless a newer or equal version is stored; returns what is stored now."""
        values = {k: getattr(rules, k) for k in BookRules.__dataclass_fields__}
        await conn.execute(
            sa.text(f"""
            INSERT INTO {SCHEMA}.book_rules AS b (book_id, allow_multi_redemption, max_redemptions,
                max_assignments_per_user, lock_ttl_seconds, valid_from, valid_until, archived, version,
                allow_self_claim)
            VALUES (:book_id, :allow_multi_redemption, :max_redemptions, :max_assignments_per_user,
                :lock_ttl_seconds, :valid_from, :valid_until, :archived, :version, :allow_self_claim)
            ON CONFLICT (book_id) DO UPDATE SET
                allow_multi_redemption = excluded.allow_multi_redemption,
                max_redemptions = excluded.max_redemptions,
                max_assignments_per_user = excluded.max_assignments_per_user,
                lock_ttl_seconds = excluded.lock_ttl_seconds, valid_from = excluded.valid_from,
                valid_until = excluded.valid_until, archived = excluded.archived, version = excluded.version,
                allow_self_claim = excluded.allow_self_claim, updated_at = now()
            WHERE b.version < excluded.version"""),
            values,
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

    # coupons

    async def coupon(self, conn: AsyncConnection, code: str) -> CouponRow | None:
        statement = sa.text(f"""SELECT {COUPON_COLUMNS} FROM {SCHEMA}.coupons c
            JOIN {SCHEMA}.book_rules r USING (book_id) WHERE c.code = :code""")
        row = (await conn.execute(statement, {"code": code})).first()
        return CouponRow(**row._mapping) if row else None

    async def coupon_for_update(self, conn: AsyncConnection, code: str) -> tuple[CouponRow, BookRules] | None:
        """The coupon and its book's rules in one statement, the coupon's row locked for this transaction."""
        rule_columns = [
            f"r.{name}{'::text' if name == 'book_id' else ''} AS rule_{name}" for name in BookRules.__dataclass_fields__
        ]
        statement = sa.text(f"""SELECT {COUPON_COLUMNS}, {", ".join(rule_columns)} FROM {SCHEMA}.coupons c
            JOIN {SCHEMA}.book_rules r USING (book_id) WHERE c.code = :code FOR UPDATE OF c""")
        row = (await conn.execute(statement, {"code": code})).first()
        if row is None:
            return None
        values = row._asdict()
        rules = BookRules(**{name: values.pop(f"rule_{name}") for name in BookRules.__dataclass_fields__})
        return CouponRow(**values), rules

    async def add_codes(self, conn: AsyncConnection, book_id: str, codes: list[str]) -> set[str]:
        """Inserts the codes as AVAILABLE (each with a fresh random key); returns the ones inserted."""
        statement = sa.text(f"""INSERT INTO {SCHEMA}.coupons (code, book_id)
            SELECT code, CAST(:book_id AS uuid) FROM unnest(CAST(:codes AS text[])) AS code
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

    async def assign(self, conn: AsyncConnection, codes: list[str], user_ids: list[str]) -> list[CouponRow]:
        """Gives each code (locked by the caller, AVAILABLE) to the user at the same position."""
        statement = sa.text(f"""WITH assigned AS (
                UPDATE {SCHEMA}.coupons c SET state = 'ASSIGNED', user_id = v.user_id, assigned_at = now()
                FROM unnest(CAST(:codes AS text[]), CAST(:user_ids AS uuid[])) AS v(code, user_id)
                WHERE c.code = v.code AND c.state = 'AVAILABLE' RETURNING c.*)
            SELECT {COUPON_COLUMNS} FROM assigned c JOIN {SCHEMA}.book_rules r USING (book_id)""")
        rows = await conn.execute(statement, {"codes": codes, "user_ids": user_ids})
        return [CouponRow(**row._mapping) for row in rows]

    async def lock(self, conn: AsyncConnection, code: str, lock_id: str, ttl_seconds: int, stamp: Stamp) -> CouponRow:
        return await self._update_held(
            conn,
            code,
            stamp,
            """lock_id = CAST(:lock_id AS uuid),
            lock_expires_at = now() + make_interval(secs => :ttl)""",
            {"lock_id": lock_id, "ttl": ttl_seconds},
        )

    async def clear_lock(self, conn: AsyncConnection, code: str, stamp: Stamp) -> CouponRow:
        return await self._update_held(conn, code, stamp, "lock_id = NULL, lock_expires_at = NULL", {})

    async def redeem(self, conn: AsyncConnection, code: str, stamp: Stamp) -> CouponRow | None:
        """Counts one redemption and consumes any lock, only while the holder has redemptions left."""
        return await self._update(
            conn,
            code,
            stamp,
            """state = 'REDEEMED', redemption_count = c.redemption_count + 1,
            last_redeemed_at = now(), lock_id = NULL, lock_expires_at = NULL""",
            {},
            condition="c.redemption_count < r.max_redemptions",
        )

    async def _update_held(
        self, conn: AsyncConnection, code: str, stamp: Stamp, assignments: str, params: dict
    ) -> CouponRow:
        """_update without a condition, on a coupon the caller holds (locked for update): it always changes."""
        updated = await self._update(conn, code, stamp, assignments, params)
        if updated is None:
            raise LookupError(f"coupon {code} vanished while locked for update")
        return updated

    async def _update(
        self, conn: AsyncConnection, code: str, stamp: Stamp, assignments: str, params: dict, condition: str = "true"
    ) -> CouponRow | None:
        """Changes one coupon and appends its history entry in the same statement (one round trip fewer
        on the hot path); nothing is logged when the condition leaves the coupon unchanged."""
        statement = sa.text(f"""WITH updated AS (
                UPDATE {SCHEMA}.coupons c SET {assignments} FROM {SCHEMA}.book_rules r
                WHERE c.code = :code AND r.book_id = c.book_id AND {condition} RETURNING c.*),
            logged AS (
                INSERT INTO {SCHEMA}.history (code, book_id, event, user_id, actor_id, request_id, distribution_id)
                SELECT code, book_id, :event, user_id, :actor_id, :request_id, '' FROM updated)
            SELECT {COUPON_COLUMNS} FROM updated c JOIN {SCHEMA}.book_rules r USING (book_id)""")
        row = (
            await conn.execute(
                statement,
                {
                    "code": code,
                    "event": stamp.event,
                    "actor_id": stamp.actor_id,
                    "request_id": stamp.request_id,
                    **params,
                },
            )
        ).first()
        return CouponRow(**row._mapping) if row else None

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
        conditions: list[str] = []
        params: dict[str, object] = {"limit": limit}
        if user_id is not None:
            conditions.append("c.user_id = CAST(:user_id AS uuid)")
            params["user_id"] = user_id
        if book_id is not None:
            conditions.append("c.book_id = CAST(:book_id AS uuid)")
            params["book_id"] = book_id
        if state is not None:
            conditions.append(_state_condition(state))
            params["state"] = state
        order = "c.code" if user_id is not None else "c.state, c.code"
        if after is not None:
            conditions.append(f"({order}) > ({', '.join(':after_' + k for k in after)})")
            params.update({f"after_{k}": v for k, v in after.items()})
        statement = sa.text(f"""SELECT {COUPON_COLUMNS} FROM {SCHEMA}.coupons c
            JOIN {SCHEMA}.book_rules r USING (book_id)
            WHERE {" AND ".join(conditions)} ORDER BY {order} LIMIT :limit""")
        return [CouponRow(**row._mapping) for row in await conn.execute(statement, params)]

    async def book_counts(self, conn: AsyncConnection, book_id: str) -> BookCounts:
        """Counted from the ledger itself (one pass over the book's rows): never drifts, no hot counter row."""
        statement = sa.text(f"""SELECT count(*) AS total,
                count(*) FILTER (WHERE c.state = 'AVAILABLE') AS available,
                count(*) FILTER (WHERE c.state = 'ASSIGNED' AND NOT {LOCK_LIVE}) AS assigned,
                count(*) FILTER (WHERE {LOCK_LIVE}) AS locked,
                count(*) FILTER (WHERE c.state = 'REDEEMED' AND NOT {LOCK_LIVE}) AS redeemed,
                coalesce(sum(c.redemption_count), 0) AS redemptions
            FROM {SCHEMA}.coupons c WHERE c.book_id = :b""")
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

    async def append_history(self, conn: AsyncConnection, events: list[HistoryEvent]) -> None:
        columns = list(HistoryEvent.__dataclass_fields__)
        types = {"book_id": "uuid", "user_id": "uuid"}
        arrays = ", ".join(f"CAST(:{c} AS {types.get(c, 'text')}[])" for c in columns)
        statement = sa.text(f"INSERT INTO {SCHEMA}.history ({', '.join(columns)}) SELECT * FROM unnest({arrays})")
        await conn.execute(statement, {c: [getattr(e, c) for e in events] for c in columns})

    async def list_history(
        self, conn: AsyncConnection, limit: int, after_id: int, *, code: str | None = None, book_id: str | None = None
    ) -> list[HistoryRow]:
        subject = "code = :subject" if code is not None else "book_id = CAST(:subject AS uuid)"
        statement = sa.text(f"""SELECT id, code, book_id::text AS book_id, event, user_id::text AS user_id,
                actor_id, request_id, distribution_id, created_at
            FROM {SCHEMA}.history WHERE {subject} AND id > :after ORDER BY id LIMIT :limit""")
        rows = await conn.execute(
            statement, {"subject": code if code is not None else book_id, "after": after_id, "limit": limit}
        )
        return [HistoryRow(**row._mapping) for row in rows]
