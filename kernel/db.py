"""The database: the async SQLAlchemy engine (psycopg 3) with a bounded pool and the one transaction helper,
and, for the hot path, a pool of plain psycopg connections in autocommit for one-statement calls."""

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator

import psycopg
import psycopg_pool
from sqlalchemy import exc as sa_exc
from sqlalchemy import text as sa_text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kernel.errors import Aborted, DomainError, FieldViolation, InvalidArgument, Unavailable
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


def _meaning(error: BaseException | None, connection_lost: bool = False) -> DomainError | None:
    """What a database failure means to the caller; None for what only a bug explains (INTERNAL).

    A deadlock or serialization failure is ABORTED (retry), a value PostgreSQL cannot store (a NUL byte, a
    number out of range) INVALID_ARGUMENT, a lost or refused connection UNAVAILABLE.
    """
    if isinstance(error, psycopg.DataError):
        return InvalidArgument(
            [
                FieldViolation(
                    "request", "holds a value that cannot be stored, such as a NUL character or a number out of range"
                )
            ],
            reason="INVALID_VALUE",
        )
    if getattr(error, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return Aborted("A concurrent operation got in the way; retry.", reason="CONCURRENT_OPERATION")
    if connection_lost or isinstance(error, (psycopg.OperationalError, psycopg_pool.PoolTimeout)):
        return _unavailable()  # lost mid-call or refused: whether it committed, a retry tells
    return None


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction on one pooled connection, used by every repository; failures as _meaning says."""
    try:
        async with engine.begin() as conn:
            yield conn
    except sa_exc.DBAPIError as error:
        meaning = _meaning(error.orig, error.connection_invalidated)
        if meaning is None:
            raise
        raise meaning from error
    except sa_exc.TimeoutError as error:  # no pooled connection came free in DB_POOL_TIMEOUT_SECONDS
        raise _unavailable() from error


# A statement connection idle this long is pinged before use: one that waited in the pool through a database
# restart is replaced instead of failing its caller, while a busy pool (the hot path) pays no extra round trip.
IDLE_CHECK_SECONDS = 1.0
# When each statement connection was last given back (statement_connection). Kept here rather than by the
# pool's `reset` callback: with one, psycopg_pool hands every returned connection to a worker task, a loop
# round trip per call.
_returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = weakref.WeakKeyDictionary()


def create_statement_pool(settings: Settings, min_size: int = 1) -> psycopg_pool.AsyncConnectionPool:
    """Autocommit psycopg connections for one-statement calls (a server-side function each): no transaction
    block, no SQLAlchemy in between. Its caller opens it; at most DB_POOL_SIZE + DB_MAX_OVERFLOW connections,
    and `min_size` of them kept open from the start."""

    async def check(conn: psycopg.AsyncConnection) -> None:
        if time.monotonic() - _returned_at.get(conn, 0.0) > IDLE_CHECK_SECONDS:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    args = connect_args(settings)
    return psycopg_pool.AsyncConnectionPool(
        libpq_url(settings.database_url),
        kwargs={
            **args,
            "autocommit": True,
            # Prepared at first use (each function call is one statement); never behind a transaction pooler.
            "prepare_threshold": 0 if settings.db_prepared_statements else None,
        },
        min_size=min_size,
        max_size=settings.db_pool_size + settings.db_max_overflow,
        timeout=settings.db_pool_timeout_seconds,
        max_lifetime=1800,
        check=check,
        open=False,
        name=f"{settings.component}-statements",
    )


def libpq_url(url: str) -> str:
    """The URL as libpq reads it (without SQLAlchemy's +driver)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def statement_connection(pool: psycopg_pool.AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled autocommit connection; failures mean what they mean in `transaction`."""
    try:
        async with pool.connection() as conn:
            try:
                yield conn
            finally:
                _returned_at[conn] = time.monotonic()
    except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
        meaning = _meaning(error)
        if meaning is None:
            raise
        raise meaning from error


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
