"""Data access for the books schema. All SQL of the books service lives here."""

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kernel import db, event_feed
from kernel.idempotency import IdempotencyStore

SCHEMA = "books"
metadata = sa.MetaData(schema=SCHEMA)
rules_version = sa.Sequence("rules_version", metadata=metadata)
books = sa.Table(
    "books",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("name", sa.Text),
    sa.Column("description", sa.Text),
    sa.Column("code_pattern", sa.Text),
    sa.Column("code_length", sa.Integer),
    sa.Column("code_alphabet", sa.Text),
    sa.Column("allow_multi_redemption", sa.Boolean),
    sa.Column("max_redemptions_per_user", sa.Integer),
    sa.Column("max_assignments_per_user", sa.Integer),
    sa.Column("lock_ttl_seconds", sa.Integer),
    sa.Column("valid_from", sa.DateTime(timezone=True)),
    sa.Column("valid_until", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text),
    sa.Column("code_count", sa.BigInteger),
    sa.Column("rules_version", sa.BigInteger),
    sa.Column("allow_self_claim", sa.Boolean),
    sa.Column("shared", sa.Boolean),
    sa.Column("max_redemptions_total", sa.Integer),
    *(
        sa.Column(name, sa.Text)
        for name in ("discount_type", "percent_off", "amount_off", "max_discount", "min_order_amount", "currency")
    ),
    sa.Column("rollback_window_seconds", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("request_hash", sa.LargeBinary),
    sa.Column("response", sa.LargeBinary),
)


@dataclass(frozen=True)
class BookRow:
    id: str
    name: str
    description: str
    code_pattern: str
    code_length: int
    code_alphabet: str
    allow_multi_redemption: bool
    max_redemptions_per_user: int
    max_assignments_per_user: int
    lock_ttl_seconds: int
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    status: str
    code_count: int
    rules_version: int
    allow_self_claim: bool
    shared: bool
    max_redemptions_total: int
    discount_type: str
    percent_off: str
    amount_off: str
    max_discount: str
    min_order_amount: str
    currency: str
    rollback_window_seconds: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class StoredAnswer:
    request_hash: bytes
    response: bytes | None


class BooksRepository:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.idempotency = IdempotencyStore(SCHEMA)

    def transaction(self):
        return db.transaction(self.engine)

    async def insert_book(self, conn: AsyncConnection, **values) -> BookRow:
        statement = sa.insert(books).values(**values, rules_version=rules_version.next_value()).returning(*books.c)
        return BookRow(**(await conn.execute(statement)).one()._mapping)

    async def book(self, conn: AsyncConnection, book_id: str, *, for_update: bool = False) -> BookRow | None:
        statement = sa.select(books).where(books.c.id == book_id)
        if for_update:
            statement = statement.with_for_update()
        row = (await conn.execute(statement)).first()
        return BookRow(**row._mapping) if row else None

    async def update_book(self, conn: AsyncConnection, book_id: str, **changes) -> BookRow:
        """Applies the changes with a new rules version (every change is pushed to the ledger)."""
        statement = (
            sa.update(books)
            .where(books.c.id == book_id)
            .values(**changes, rules_version=rules_version.next_value(), updated_at=sa.func.now())
            .returning(*books.c)
        )
        return BookRow(**(await conn.execute(statement)).one()._mapping)

    async def add_code_count(self, conn: AsyncConnection, book_id: str, added: int) -> None:
        await conn.execute(sa.update(books).where(books.c.id == book_id).values(code_count=books.c.code_count + added))
        await event_feed.record(conn, SCHEMA, "book.codes_added", ("book", book_id), book_id, {"added": added})

    async def record_change(self, conn: AsyncConnection, event_type: str, book: BookRow) -> None:
        """The book's outbox entry for a change made in this transaction (docs/events.md)."""
        data = {"name": book.name, "status": book.status, "code_count": book.code_count}
        await event_feed.record(conn, SCHEMA, event_type, ("book", book.id), book.id, data)

    async def list_books(
        self, conn: AsyncConnection, limit: int, before: tuple[dt.datetime, str] | None, status: str, name_contains: str
    ) -> tuple[list[BookRow], int]:
        """Newest first; `before` is the (created_at, id) of the last book of the previous page."""
        condition: sa.ColumnElement[bool] = sa.true()
        if status:
            condition = sa.and_(condition, books.c.status == status)
        if name_contains:
            condition = sa.and_(condition, books.c.name.ilike(f"%{_escape_like(name_contains)}%", escape="\\"))
        statement = sa.select(books).where(condition)
        if before is not None:
            statement = statement.where(
                sa.tuple_(books.c.created_at, books.c.id)
                < sa.tuple_(sa.literal(before[0], books.c.created_at.type), sa.literal(before[1], books.c.id.type))
            )
        rows = await conn.execute(statement.order_by(books.c.created_at.desc(), books.c.id.desc()).limit(limit))
        total = (await conn.execute(sa.select(sa.func.count()).select_from(books).where(condition))).scalar_one()
        return [BookRow(**row._mapping) for row in rows], total

    async def codes_in_space(self, conn: AsyncConnection, pattern: str, length: int, alphabet: str) -> int:
        """Codes stored by every book with this pattern, length and alphabet: they share one code space."""
        statement = sa.select(sa.func.coalesce(sa.func.sum(books.c.code_count), 0)).where(
            books.c.code_pattern == pattern, books.c.code_length == length, books.c.code_alphabet == alphabet
        )
        return int((await conn.execute(statement)).scalar_one())

    async def stored_answer(self, conn: AsyncConnection, scope: str, request_id: str) -> StoredAnswer | None:
        """A request_id's record, read without claiming it (for uploads, claimed only once fully read)."""
        statement = sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.response).where(
            idempotency_keys.c.scope == scope, idempotency_keys.c.request_id == request_id
        )
        row = (await conn.execute(statement)).first()
        return StoredAnswer(row.request_hash, row.response) if row else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
