"""Data access for the pools schema. All SQL of the pools service lives here."""

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kernel import db, event_feed
from kernel.idempotency import IdempotencyStore

SCHEMA = "pools"
metadata = sa.MetaData(schema=SCHEMA)
pools = sa.Table(
    "pools",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("name", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
members = sa.Table(
    "members",
    metadata,
    sa.Column("pool_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("user_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("added_at", sa.DateTime(timezone=True)),
)
distributions = sa.Table(
    "distributions",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("pool_id", sa.Uuid(as_uuid=False)),
    sa.Column("book_id", sa.Uuid(as_uuid=False)),
    sa.Column("mode", sa.Text),
    sa.Column("request", postgresql.JSONB),
    sa.Column("result", postgresql.JSONB),
    sa.Column("assigned", sa.BigInteger),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("state", sa.Text),
)
MEMBER_COUNT = (
    sa.select(sa.func.count())
    .select_from(members)
    .where(members.c.pool_id == pools.c.id)
    .scalar_subquery()
    .label("member_count")
)


@dataclass(frozen=True)
class PoolRow:
    id: str
    name: str
    description: str
    created_at: dt.datetime
    updated_at: dt.datetime
    member_count: int


@dataclass(frozen=True)
class MemberRow:
    user_id: str
    email: str
    added_at: dt.datetime


@dataclass(frozen=True)
class DistributionRow:
    id: str
    pool_id: str
    book_id: str
    mode: str
    request: dict
    result: dict
    assigned: int
    created_at: dt.datetime | None
    state: str = "DONE"  # PENDING: planned, the ledger's answer not recorded yet


class PoolNameTaken(Exception):
    """Another pool has this name (unique index on lower(name))."""


async def _record(conn: AsyncConnection, event_type: str, pool_id: str, data: dict) -> None:
    """The pool's outbox entry for a change made in this transaction (docs/events.md)."""
    await event_feed.record(conn, SCHEMA, event_type, ("pool", pool_id), "", data)


class PoolsRepository:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.idempotency = IdempotencyStore(SCHEMA)

    def transaction(self):
        return db.transaction(self.engine)

    # pools

    async def insert_pool(self, conn: AsyncConnection, name: str, description: str) -> PoolRow:
        statement = sa.insert(pools).values(name=name, description=description).returning(pools.c.id)
        try:
            async with conn.begin_nested():
                pool_id = (await conn.execute(statement)).scalar_one()
        except sa.exc.IntegrityError as error:
            raise PoolNameTaken(name) from error
        inserted = await self.pool(conn, pool_id)
        if inserted is None:  # inserted just above, in this transaction
            raise LookupError(f"pool {pool_id} vanished after its insert")
        await _record(conn, "pool.created", pool_id, {"name": name})
        return inserted

    async def pool(self, conn: AsyncConnection, pool_id: str, keep: bool = False) -> PoolRow | None:
        """keep: hold a key-share lock so the pool cannot be deleted before the transaction ends."""
        statement = sa.select(pools, MEMBER_COUNT).where(pools.c.id == pool_id)
        if keep:
            statement = statement.with_for_update(of=pools, read=True, key_share=True)
        row = (await conn.execute(statement)).first()
        return PoolRow(**row._mapping) if row else None

    async def list_pools(
        self, conn: AsyncConnection, limit: int, after: tuple[dt.datetime, str] | None
    ) -> tuple[list[PoolRow], int]:
        """A page of pools, and how many pools there are in all (ListPoolsResponse.total_size)."""
        statement = sa.select(pools, MEMBER_COUNT)
        if after is not None:
            statement = statement.where(
                sa.tuple_(pools.c.created_at, pools.c.id)
                > sa.tuple_(sa.literal(after[0], pools.c.created_at.type), sa.literal(after[1], pools.c.id.type))
            )
        rows = await conn.execute(statement.order_by(pools.c.created_at, pools.c.id).limit(limit))
        total = (await conn.execute(sa.select(sa.func.count()).select_from(pools))).scalar_one()
        return [PoolRow(**row._mapping) for row in rows], total

    async def update_pool(self, conn: AsyncConnection, pool_id: str, **changes) -> PoolRow | None:
        statement = (
            sa.update(pools)
            .where(pools.c.id == pool_id)
            .values(**changes, updated_at=sa.func.now())
            .returning(pools.c.id)
        )
        try:
            async with conn.begin_nested():
                updated = (await conn.execute(statement)).scalar_one_or_none()
        except sa.exc.IntegrityError as error:
            raise PoolNameTaken(changes.get("name", "")) from error
        if not updated:
            return None
        await _record(conn, "pool.updated", pool_id, changes)
        return await self.pool(conn, updated)

    async def delete_pool(self, conn: AsyncConnection, pool_id: str) -> bool:
        deleted = (await conn.execute(sa.delete(pools).where(pools.c.id == pool_id).returning(pools.c.id))).first()
        if deleted is not None:
            await _record(conn, "pool.deleted", pool_id, {})
        return deleted is not None

    # members

    async def add_members(self, conn: AsyncConnection, pool_id: str, users: list[tuple[str, str]]) -> set[str]:
        """Adds (user_id, email) pairs in one statement; returns the ids that were not members yet."""
        statement = sa.text(f"""INSERT INTO {SCHEMA}.members (pool_id, user_id, email)
            SELECT CAST(:pool_id AS uuid), u.user_id, u.email
            FROM unnest(CAST(:user_ids AS uuid[]), CAST(:emails AS text[])) AS u(user_id, email)
            ON CONFLICT DO NOTHING RETURNING user_id::text""")
        rows = await conn.execute(
            statement, {"pool_id": pool_id, "user_ids": [u for u, _ in users], "emails": [e for _, e in users]}
        )
        added = set(rows.scalars())
        if added:
            await _record(conn, "pool.members_added", pool_id, {"user_ids": sorted(added)})
        return added

    async def members_by_keys(
        self, conn: AsyncConnection, pool_id: str, user_ids: list[str], emails: list[str]
    ) -> list[MemberRow]:
        """The members among these ids and (lower-case) emails."""
        statement = sa.select(members.c.user_id, members.c.email, members.c.added_at).where(
            members.c.pool_id == pool_id,
            sa.or_(members.c.user_id.in_(user_ids), sa.func.lower(members.c.email).in_(emails)),
        )
        return [MemberRow(**row._mapping) for row in await conn.execute(statement)]

    async def remove_members(self, conn: AsyncConnection, pool_id: str, user_ids: list[str]) -> set[str]:
        statement = sa.text(f"""DELETE FROM {SCHEMA}.members
            WHERE pool_id = CAST(:pool_id AS uuid) AND user_id = ANY(CAST(:user_ids AS uuid[]))
            RETURNING user_id::text""")
        removed = set((await conn.execute(statement, {"pool_id": pool_id, "user_ids": user_ids})).scalars())
        if removed:
            await _record(conn, "pool.members_removed", pool_id, {"user_ids": sorted(removed)})
        return removed

    async def list_members(
        self, conn: AsyncConnection, pool_id: str, limit: int, after: tuple[dt.datetime, str] | None
    ) -> list[MemberRow]:
        statement = sa.select(members.c.user_id, members.c.email, members.c.added_at).where(
            members.c.pool_id == pool_id
        )
        if after is not None:
            statement = statement.where(
                sa.tuple_(members.c.added_at, members.c.user_id)
                > sa.tuple_(sa.literal(after[0], members.c.added_at.type), sa.literal(after[1], members.c.user_id.type))
            )
        rows = await conn.execute(statement.order_by(members.c.added_at, members.c.user_id).limit(limit))
        return [MemberRow(**row._mapping) for row in rows]

    async def member_ids(self, conn: AsyncConnection, pool_id: str) -> list[str]:
        statement = sa.select(members.c.user_id).where(members.c.pool_id == pool_id).order_by(members.c.user_id)
        return list((await conn.execute(statement)).scalars())

    # distributions

    async def insert_distribution(self, conn: AsyncConnection, row: DistributionRow) -> DistributionRow:
        values = {k: v for k, v in row.__dict__.items() if k != "created_at"}
        inserted = (await conn.execute(sa.insert(distributions).values(**values).returning(*distributions.c))).one()
        return DistributionRow(**inserted._mapping)

    async def finish_distribution(self, conn: AsyncConnection, distribution_id: str, assigned: int) -> DistributionRow:
        statement = (
            sa.update(distributions)
            .where(distributions.c.id == distribution_id)
            .values(state="DONE", assigned=assigned)
            .returning(*distributions.c)
        )
        done = DistributionRow(**(await conn.execute(statement)).one()._mapping)
        data = {"distribution_id": done.id, "book_id": done.book_id, "mode": done.mode, "assigned": assigned}
        await event_feed.record(conn, SCHEMA, "pool.distributed", ("pool", done.pool_id), done.book_id, data)
        return done

    async def delete_pending_distribution(self, conn: AsyncConnection, distribution_id: str) -> None:
        await conn.execute(
            sa.delete(distributions).where(distributions.c.id == distribution_id, distributions.c.state == "PENDING")
        )

    async def distribution(self, conn: AsyncConnection, distribution_id: str) -> DistributionRow | None:
        row = (await conn.execute(sa.select(distributions).where(distributions.c.id == distribution_id))).first()
        return DistributionRow(**row._mapping) if row else None
