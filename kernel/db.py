"""The async SQLAlchemy engine (psycopg 3) with a bounded pool, and the one transaction helper."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as sa_text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kernel.errors import Aborted, FieldViolation, InvalidArgument, Unavailable
from kernel.settings import Settings


def sqlalchemy_url(url: str) -> str:
    """postgresql://... as libpq and tools write it, with the psycopg 3 driver SQLAlchemy needs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=1800,
        # A connection the server dropped (a restart, a failover) is replaced at checkout instead of failing
        # the next caller: one extra round trip per transaction.
        pool_pre_ping=True,
        connect_args=connect_args(settings),
    )


def connect_args(settings: Settings) -> dict:
    """psycopg connection arguments; DB_PREPARED_STATEMENTS=off sends every statement unnamed (unprepared),
    which a transaction-mode pooler can hand to any server connection."""
    args: dict = {"application_name": f"coupons-{settings.component}", "connect_timeout": 5}
    if not settings.db_prepared_statements:
        args["prepare_threshold"] = None
    return args


# PostgreSQL's own concurrency refusals: the same transaction may well succeed when run again.
RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction on one pooled connection, used by every repository.

    A deadlock or serialization failure becomes ABORTED (retry), a value PostgreSQL cannot store (a NUL
    byte, a number out of range) INVALID_ARGUMENT: never INTERNAL for what the caller can act on.
    """
    try:
        async with engine.begin() as conn:
            yield conn
    except sa_exc.DataError as error:
        raise InvalidArgument(
            [
                FieldViolation(
                    "request", "holds a value that cannot be stored, such as a NUL character or a number out of range"
                )
            ],
            reason="INVALID_VALUE",
        ) from error
    except sa_exc.DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
            raise Aborted("A concurrent operation got in the way; retry.", reason="CONCURRENT_OPERATION") from error
        if error.connection_invalidated or isinstance(error.orig, psycopg.OperationalError):
            raise _unavailable() from error  # lost mid-call or refused: whether it committed, a retry tells
        raise
    except sa_exc.TimeoutError as error:  # no pooled connection came free in DB_POOL_TIMEOUT_SECONDS
        raise _unavailable() from error


def _unavailable() -> Unavailable:
    return Unavailable(
        "The database cannot be reached right now; retry shortly (with the same request_id).",
        reason="DATABASE_UNAVAILABLE",
        retry_after_seconds=1.0,
    )


async def ping(engine: AsyncEngine, timeout_seconds: float = 2.0) -> bool:
    """Whether the database answers now (for readiness)."""
    try:
        async with asyncio.timeout(timeout_seconds):
            async with engine.connect() as conn:
                await conn.execute(sa_text("SELECT 1"))
        return True
    except Exception:
        return False
