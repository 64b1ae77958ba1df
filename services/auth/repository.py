"""Data access for the auth schema. All SQL of the auth service lives here."""

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kernel import db
from kernel.idempotency import IdempotencyStore
from kernel.purge import Target, idempotency_keys

SCHEMA = "auth"
metadata = sa.MetaData(schema=SCHEMA)
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True, server_default=sa.text("gen_random_uuid()")),
    sa.Column("email", sa.Text),
    sa.Column("name", sa.Text),
    sa.Column("role", sa.Text),
    sa.Column("active", sa.Boolean),
    sa.Column("password_hash", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary, primary_key=True),
    sa.Column("user_id", sa.Uuid(as_uuid=False)),
    sa.Column("family_id", sa.Uuid(as_uuid=False)),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("used_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)
revocations = sa.Table(
    "revocations",
    metadata,
    sa.Column("user_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("not_before", sa.DateTime(timezone=True)),
    sa.Column("disabled", sa.Boolean),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
login_throttle = sa.Table(
    "login_throttle",
    metadata,
    sa.Column("email_key", sa.Text, primary_key=True),
    sa.Column("failures", sa.Integer),
    sa.Column("window_started_at", sa.DateTime(timezone=True)),
    sa.Column("locked_until", sa.DateTime(timezone=True)),
)


def purge_targets(refresh_token_retention_seconds: int) -> list[Target]:
    """What the retention purge deletes here. A revoked token's family is revoked whole and an expired token
    cannot be used, so after the retention neither can matter; a spent (used) token stays until it expires,
    since reuse detection needs it to recognise a stolen copy."""
    keep = f"make_interval(secs => {int(refresh_token_retention_seconds)})"
    return [
        idempotency_keys(SCHEMA),
        Target(f"{SCHEMA}.refresh_tokens", f"revoked_at < now() - {keep} OR expires_at < now() - {keep}"),
    ]


@dataclass(frozen=True)
class UserRow:
    id: str
    email: str
    name: str
    role: str
    active: bool
    password_hash: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class RefreshTokenRow:
    user_id: str
    family_id: str
    expires_at: dt.datetime
    used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    now: dt.datetime  # the database's clock, which also stamped used_at


@dataclass(frozen=True)
class RevocationRow:
    user_id: str
    not_before: dt.datetime
    disabled: bool


@dataclass(frozen=True)
class ThrottleRow:
    failures: int
    window_started_at: dt.datetime
    locked_until: dt.datetime | None
    now: dt.datetime


class UserExists(Exception):
    """The email is taken (unique index on lower(email))."""


class AuthRepository:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.idempotency = IdempotencyStore(SCHEMA)

    def transaction(self):
        return db.transaction(self.engine)

    # users

    async def insert_user(self, conn: AsyncConnection, email: str, name: str, role: str, password_hash: str) -> UserRow:
        statement = (
            sa.insert(users).values(email=email, name=name, role=role, password_hash=password_hash).returning(*users.c)
        )
        try:
            async with conn.begin_nested():
                row = (await conn.execute(statement)).one()
        except sa.exc.IntegrityError as error:
            raise UserExists(email) from error
        return UserRow(**row._mapping)

    async def user_by_id(self, conn: AsyncConnection, user_id: str) -> UserRow | None:
        row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        return UserRow(**row._mapping) if row else None

    async def user_by_email(self, conn: AsyncConnection, email: str) -> UserRow | None:
        statement = sa.select(users).where(sa.func.lower(users.c.email) == email.lower())
        row = (await conn.execute(statement)).first()
        return UserRow(**row._mapping) if row else None

    async def users_by_emails(self, conn: AsyncConnection, emails: list[str]) -> dict[str, UserRow]:
        keys = sorted({e.lower() for e in emails})
        rows = await conn.execute(sa.select(users).where(sa.func.lower(users.c.email).in_(keys)))
        return {row.email.lower(): UserRow(**row._mapping) for row in rows}

    async def users_by_ids(self, conn: AsyncConnection, ids: list[str]) -> dict[str, UserRow]:
        rows = await conn.execute(sa.select(users).where(users.c.id.in_(sorted(set(ids)))))
        return {row.id: UserRow(**row._mapping) for row in rows}

    async def list_users(
        self, conn: AsyncConnection, limit: int, after: tuple[dt.datetime, str] | None, email_contains: str
    ) -> tuple[list[UserRow], int]:
        condition: sa.ColumnElement[bool] = sa.true()
        if email_contains:
            condition = users.c.email.ilike(f"%{_escape_like(email_contains)}%", escape="\\")
        statement = sa.select(users).where(condition)
        if after is not None:
            statement = statement.where(
                sa.tuple_(users.c.created_at, users.c.id)
                > sa.tuple_(sa.literal(after[0], users.c.created_at.type), sa.literal(after[1], users.c.id.type))
            )
        rows = await conn.execute(statement.order_by(users.c.created_at, users.c.id).limit(limit))
        total = (await conn.execute(sa.select(sa.func.count()).select_from(users).where(condition))).scalar_one()
        return [UserRow(**row._mapping) for row in rows], total

    async def update_user(self, conn: AsyncConnection, user_id: str, **changes) -> UserRow | None:
        statement = (
            sa.update(users)
            .where(users.c.id == user_id)
            .values(**changes, updated_at=sa.func.now())
            .returning(*users.c)
        )
        row = (await conn.execute(statement)).first()
        return UserRow(**row._mapping) if row else None

    # refresh tokens

    async def insert_refresh_token(
        self, conn: AsyncConnection, token_hash: bytes, user_id: str, family_id: str, expires_at: dt.datetime
    ) -> None:
        await conn.execute(
            sa.insert(refresh_tokens).values(
                token_hash=token_hash, user_id=user_id, family_id=family_id, expires_at=expires_at
            )
        )

    async def lock_refresh_token(self, conn: AsyncConnection, token_hash: bytes) -> RefreshTokenRow | None:
        statement = (
            sa.select(
                refresh_tokens.c.user_id,
                refresh_tokens.c.family_id,
                refresh_tokens.c.expires_at,
                refresh_tokens.c.used_at,
                refresh_tokens.c.revoked_at,
                sa.func.now().label("now"),
            )
            .where(refresh_tokens.c.token_hash == token_hash)
            .with_for_update()
        )
        row = (await conn.execute(statement)).first()
        return RefreshTokenRow(**row._mapping) if row else None

    async def mark_refresh_token_used(self, conn: AsyncConnection, token_hash: bytes) -> None:
        await conn.execute(
            sa.update(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).values(used_at=sa.func.now())
        )

    async def revoke_family(self, conn: AsyncConnection, family_id: str) -> None:
        await conn.execute(
            sa.update(refresh_tokens)
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=sa.func.now())
        )

    async def revoke_user_tokens(self, conn: AsyncConnection, user_id: str) -> None:
        await conn.execute(
            sa.update(refresh_tokens)
            .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=sa.func.now())
        )

    # revocations: what every service refuses, polled by them

    async def set_revocation(self, conn: AsyncConnection, user_id: str, disabled: bool) -> None:
        """Tokens issued until now are refused; while disabled, every token is."""
        await conn.execute(
            postgresql.insert(revocations)
            .values(user_id=user_id, not_before=sa.func.now(), disabled=disabled)
            .on_conflict_do_update(
                index_elements=[revocations.c.user_id],
                set_={"not_before": sa.func.now(), "disabled": disabled, "updated_at": sa.func.now()},
            )
        )

    async def recent_revocations(self, conn: AsyncConnection, max_age_seconds: int) -> list[RevocationRow]:
        """The revocations that can still matter: a token older than max_age_seconds has expired anyway."""
        statement = sa.select(revocations.c.user_id, revocations.c.not_before, revocations.c.disabled).where(
            revocations.c.updated_at > sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, max_age_seconds)
        )
        return [RevocationRow(**row._mapping) for row in await conn.execute(statement)]

    # login throttle

    async def lock_throttle(self, conn: AsyncConnection, email_key: str) -> ThrottleRow:
        """The email's sign-in counter, created when missing and locked for this transaction."""
        await conn.execute(
            postgresql.insert(login_throttle)
            .values(email_key=email_key, failures=0, window_started_at=sa.func.now())
            .on_conflict_do_nothing()
        )
        statement = (
            sa.select(
                login_throttle.c.failures,
                login_throttle.c.window_started_at,
                login_throttle.c.locked_until,
                sa.func.now().label("now"),
            )
            .where(login_throttle.c.email_key == email_key)
            .with_for_update()
        )
        return ThrottleRow(**(await conn.execute(statement)).one()._mapping)

    async def save_throttle(
        self,
        conn: AsyncConnection,
        email_key: str,
        failures: int,
        window_started_at: dt.datetime,
        locked_until: dt.datetime | None,
    ) -> None:
        await conn.execute(
            sa.update(login_throttle)
            .where(login_throttle.c.email_key == email_key)
            .values(failures=failures, window_started_at=window_started_at, locked_until=locked_until)
        )

    async def forgive_attempt(self, conn: AsyncConnection, key: str) -> None:
        """Takes back one counted attempt (it succeeded), so only failures add up."""
        await conn.execute(
            sa.update(login_throttle)
            .where(login_throttle.c.email_key == key, login_throttle.c.failures > 0)
            .values(failures=login_throttle.c.failures - 1)
        )

    async def clear_failures(self, conn: AsyncConnection, email_key: str) -> None:
        await conn.execute(sa.delete(login_throttle).where(login_throttle.c.email_key == email_key))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
