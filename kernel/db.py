"""The async SQLAlchemy engine (psycopg 3) with a bounded pool, and the one transaction helper."""

import contextlib
from typing import AsyncIterator

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from kernel.errors import Aborted, FieldViolation, InvalidArgument
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
        connect_args={"application_name": f"coupons-{settings.component}"},
    )


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
        raise InvalidArgument([FieldViolation("request", "holds a value that cannot be stored, such as a NUL "
                                              "character or a number out of range")],
                              reason="INVALID_VALUE") from error
    except sa_exc.DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
            raise
        raise Aborted("A concurrent operation got in the way; retry.", reason="CONCURRENT_OPERATION") from error
