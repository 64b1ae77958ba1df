"""The retention purge every service runs in its background: rows past their retention, deleted in small batches.

What is purged is each service's business (`Target`s from its repository): the idempotency keys older than
`kernel.idempotency.RETENTION` in every schema, the spent refresh tokens in auth. How, so that the hot path
never waits for it:

- one pass every PURGE_INTERVAL_SECONDS (jittered, so replicas do not purge in step; 0 turns it off);
- each batch is one short transaction deleting at most PURGE_BATCH_SIZE rows found by an index and locked
  `FOR UPDATE SKIP LOCKED`: a row a request holds is skipped (the next pass gets it), never waited for;
  `lock_timeout` and `statement_timeout` bound anything else;
- PURGE_PAUSE_SECONDS between batches, so a large backlog drains as a trickle;
- its own single database connection (application_name `coupons-<component>-purge`), never one of the
  pool the requests use;
- a failed pass (the database away) is logged and tried again at the next interval.
"""

import asyncio
import logging
import random
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kernel.db import sqlalchemy_url
from kernel.idempotency import RETENTION
from kernel.metrics import PURGED_ROWS
from kernel.settings import Settings

log = logging.getLogger("kernel.purge")


@dataclass(frozen=True)
class Target:
    table: str  # schema-qualified, e.g. "redemption.idempotency_keys"
    condition: str  # SQL over the table's columns: which rows are past their retention (an index should serve it)


def idempotency_keys(schema: str) -> Target:
    """Keys older than RETENTION: a request_id that old counts as a new request anyway."""
    return Target(f"{schema}.idempotency_keys", f"created_at < now() - interval '{RETENTION}'")


def _delete_batch(target: Target) -> sa.TextClause:
    # ctid = ANY(ARRAY(...)) is a TID scan: the rows just found and locked, nothing else is read.
    return sa.text(
        f"DELETE FROM {target.table} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {target.table} WHERE ({target.condition}) LIMIT :limit FOR UPDATE SKIP LOCKED))"
    )


class Purger:
    def __init__(self, settings: Settings, targets: list[Target]):
        self.component = settings.component
        self.database_url = settings.database_url
        self.targets = list(targets)
        self.interval = settings.purge_interval_seconds
        self.batch_size = settings.purge_batch_size
        self.pause = settings.purge_pause_seconds
        self._engine: AsyncEngine | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0 and bool(self.targets) and bool(self.database_url)

    def _connection_engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_async_engine(
                sqlalchemy_url(self.database_url),
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,
                connect_args={"application_name": f"coupons-{self.component}-purge", "connect_timeout": 5},
            )
        return self._engine

    async def purge_once(self) -> dict[str, int]:
        """One pass over every target, batch by batch until a batch comes back short; rows deleted per table."""
        engine = self._connection_engine()
        deleted: dict[str, int] = {}
        for target in self.targets:
            statement = _delete_batch(target)
            total = 0
            while True:
                async with engine.begin() as conn:
                    await conn.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
                    await conn.execute(sa.text("SET LOCAL statement_timeout = '10s'"))
                    count = (await conn.execute(statement, {"limit": self.batch_size})).rowcount
                total += count
                PURGED_ROWS.labels(target.table).inc(count)
                if count < self.batch_size:
                    break
                await asyncio.sleep(self.pause)
            deleted[target.table] = total
        if any(deleted.values()):
            log.info("purged", extra={"fields": {"component": self.component, "deleted": deleted}})
        return deleted

    async def run(self) -> None:
        """Passes forever, one per interval; cancelled when the server stops."""
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            try:
                await self.purge_once()
            except Exception as error:  # the database away, a timeout: the next pass tries again
                log.warning("purge pass failed", extra={"fields": {"component": self.component, "error": repr(error)}})

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
