"""The webhooks' tables in the events schema: endpoints, deliveries (one per endpoint and matching event)
and attempts; the dispatcher's rounds (claims and settlements)."""

import datetime as dt
import json
from typing import Any

import psycopg_pool
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kernel import db
from kernel.idempotency import IdempotencyStore
from kernel.purge import Target
from services.events.repository import StoredEvent, event_columns
from services.events.webhook_model import (
    Attempt,
    AttemptOutcome,
    Claim,
    Delivery,
    DeliveryState,
    Endpoint,
    EndpointState,
    Outcome,
)

_ENDPOINT = (
    "id::text AS id, url, event_types, COALESCE(book_id::text, '') AS book_id, description, state, secret,"
    " created_at, updated_at, secret_rotated_at"
)
_DELIVERY = (
    "d.id::text AS delivery_id, d.endpoint_id::text AS endpoint_id, d.state AS delivery_state, d.attempt_count,"
    " d.next_attempt_at, d.created_at AS delivery_created_at, d.delivered_at, d.last_status_code, d.last_error, "
    + event_columns("ev")
)
_MATCHES = (
    "e.state = 'ENABLED' AND (cardinality(e.event_types) = 0 OR ev.type = ANY(e.event_types))"
    " AND (e.book_id IS NULL OR e.book_id = ev.book_id)"
)


def _endpoint(row) -> Endpoint:
    values = dict(row._mapping)
    values["event_types"] = tuple(values["event_types"])
    values["state"] = EndpointState(values["state"])
    return Endpoint(**values)


def _delivery(row, attempts: tuple[Attempt, ...] = ()) -> Delivery:
    return Delivery(
        id=row.delivery_id,
        endpoint_id=row.endpoint_id,
        event=row,
        state=DeliveryState(row.delivery_state),
        attempt_count=row.attempt_count,
        next_attempt_at=row.next_attempt_at,
        created_at=row.delivery_created_at,
        delivered_at=row.delivered_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        attempts=attempts,
    )


def _record(outcome: Outcome) -> dict:
    """One finished attempt as events.settle_and_claim reads it."""
    attempt = outcome.attempt
    return {
        "id": outcome.claim.delivery_id,
        "number": attempt.number,
        "started_at": attempt.started_at.isoformat(),
        "duration_ms": attempt.duration_ms,
        "outcome": attempt.outcome.value,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "state": outcome.state.value,
        "next_attempt_at": outcome.next_attempt_at.isoformat(),
        "recorded_at": outcome.recorded_at.isoformat(),
    }


def finished_deliveries(retention_seconds: int) -> Target:
    """Delivered and dead-lettered deliveries past their retention (their attempts go with them), for the purge."""
    return Target(
        "events.webhook_deliveries",
        f"state <> 'PENDING' AND finished_at < now() - make_interval(secs => {int(retention_seconds)})",
    )


class WebhookRepository:
    def __init__(self, engine: AsyncEngine, statements: psycopg_pool.AsyncConnectionPool):
        self.engine = engine
        self.statements = statements  # the dispatcher's rounds, one statement each
        self.idempotency = IdempotencyStore("events")

    def transaction(self):
        return db.transaction(self.engine)

    # endpoints

    async def insert_endpoint(
        self, conn: AsyncConnection, url: str, event_types: list[str], book_id: str, description: str, secret: str
    ) -> Endpoint:
        row = (
            await conn.execute(
                sa.text(
                    "INSERT INTO events.webhook_endpoints (url, event_types, book_id, description, secret)"
                    " VALUES (:url, :types, CAST(NULLIF(:book_id, '') AS uuid), :description, :secret)"
                    f" RETURNING {_ENDPOINT}"
                ),
                {"url": url, "types": event_types, "book_id": book_id, "description": description, "secret": secret},
            )
        ).one()
        return _endpoint(row)

    async def endpoint(self, conn: AsyncConnection, endpoint_id: str) -> Endpoint | None:
        row = (
            await conn.execute(
                sa.text(f"SELECT {_ENDPOINT} FROM events.webhook_endpoints WHERE id = CAST(:id AS uuid)"),
                {"id": endpoint_id},
            )
        ).first()
        return None if row is None else _endpoint(row)

    async def list_endpoints(
        self, conn: AsyncConnection, limit: int, after: tuple[dt.datetime, str] | None
    ) -> tuple[list[Endpoint], int]:
        where, params = "", dict[str, object](limit=limit)
        if after is not None:
            where = "WHERE (created_at, id) > (:t, CAST(:id AS uuid))"
            params |= {"t": after[0], "id": after[1]}
        rows = await conn.execute(
            sa.text(f"SELECT {_ENDPOINT} FROM events.webhook_endpoints {where} ORDER BY created_at, id LIMIT :limit"),
            params,
        )
        total = (await conn.execute(sa.text("SELECT count(*) FROM events.webhook_endpoints"))).scalar_one()
        return [_endpoint(row) for row in rows], total

    async def update_endpoint(self, conn: AsyncConnection, endpoint_id: str, changes: dict) -> Endpoint | None:
        """Sets the changed columns (url, event_types, book_id, description, state; secret with its time)."""
        sets = [f"{column} = :{column}" for column in changes if column != "book_id"]
        if "book_id" in changes:
            sets.append("book_id = CAST(NULLIF(:book_id, '') AS uuid)")
        if "secret" in changes:
            sets.append("secret_rotated_at = now()")
        row = (
            await conn.execute(
                sa.text(
                    f"UPDATE events.webhook_endpoints SET {', '.join(sets + ['updated_at = now()'])}"
                    f" WHERE id = CAST(:endpoint_id AS uuid) RETURNING {_ENDPOINT}"
                ),
                {**changes, "endpoint_id": endpoint_id},
            )
        ).first()
        return None if row is None else _endpoint(row)

    # deliveries

    async def fan_out(self, conn: AsyncConnection, stored: list[StoredEvent]) -> int:
        """One delivery per enabled, matching endpoint for each event just stored, in the transaction that
        stores them: an event kept is an event delivered. The events come as arrays, not from a join with
        the events table, so no plan of this statement can scan that table."""
        if not stored:
            return 0
        result = await conn.execute(
            sa.text(
                "INSERT INTO events.webhook_deliveries (endpoint_id, event_seq, next_attempt_at)"
                " SELECT e.id, ev.seq, now() FROM unnest(CAST(:seqs AS bigint[]), CAST(:types AS text[]),"
                " CAST(:book_ids AS uuid[])) AS ev(seq, type, book_id) JOIN events.webhook_endpoints e"
                f" ON {_MATCHES} ON CONFLICT ON CONSTRAINT webhook_deliveries_once_per_event DO NOTHING"
            ),
            {
                "seqs": [event.seq for event in stored],
                "types": [event.type for event in stored],
                "book_ids": [event.book_id for event in stored],
            },
        )
        return result.rowcount

    async def settle_and_claim(
        self, finished: list[Outcome], now: dt.datetime, lease_until: dt.datetime, limit: int
    ) -> list[Claim]:
        """A dispatcher's round in one statement (events.settle_and_claim, migration 0003), committed before
        any request is sent: records the finished attempts and their deliveries' outcomes, then takes up to
        `limit` due deliveries of enabled endpoints for one attempt each. A claimed delivery is leased until
        `lease_until` (a second dispatcher skips it; a crashed claimer's lease runs out), its next_attempt_at
        left as it was, and the attempt is counted."""
        records = json.dumps([_record(outcome) for outcome in finished])
        async with db.statement_connection(self.statements) as conn:
            cursor = conn.cursor(row_factory=namedtuple_row)
            await cursor.execute(
                "SELECT * FROM events.settle_and_claim(CAST(%s AS jsonb), %s, %s, %s)",
                (records, now, lease_until, limit),
            )
            rows: list[Any] = await cursor.fetchall()  # named tuples: the event's columns by name
        return [Claim(r.delivery_id, r.endpoint_id, r.url, r.secret, r.attempt_count, r.round_tries, r) for r in rows]

    async def list_deliveries(
        self,
        conn: AsyncConnection,
        endpoint_id: str,
        state: DeliveryState | None,
        limit: int,
        after: tuple[dt.datetime, str] | None,
    ) -> tuple[list[Delivery], int]:
        """Newest first; endpoint_id "" for every endpoint's."""
        conditions, params = ["true"], dict[str, object](limit=limit)
        if endpoint_id:
            conditions.append("d.endpoint_id = CAST(:endpoint_id AS uuid)")
            params["endpoint_id"] = endpoint_id
        if state is not None:
            conditions.append("d.state = :state")
            params["state"] = state.value
        counted = " AND ".join(conditions)
        if after is not None:
            conditions.append("(d.created_at, d.id) < (:t, CAST(:id AS uuid))")
            params |= {"t": after[0], "id": after[1]}
        rows = await conn.execute(
            sa.text(
                f"SELECT {_DELIVERY} FROM events.webhook_deliveries d JOIN events.events ev ON ev.seq = d.event_seq"
                f" WHERE {' AND '.join(conditions)} ORDER BY d.created_at DESC, d.id DESC LIMIT :limit"
            ),
            params,
        )
        total = (
            await conn.execute(sa.text(f"SELECT count(*) FROM events.webhook_deliveries d WHERE {counted}"), params)
        ).scalar_one()
        return [_delivery(row) for row in rows], total

    async def delivery(self, conn: AsyncConnection, delivery_id: str) -> Delivery | None:
        row = (
            await conn.execute(
                sa.text(
                    f"SELECT {_DELIVERY} FROM events.webhook_deliveries d JOIN events.events ev"
                    " ON ev.seq = d.event_seq WHERE d.id = CAST(:id AS uuid)"
                ),
                {"id": delivery_id},
            )
        ).first()
        if row is None:
            return None
        attempts = await conn.execute(
            sa.text(
                "SELECT number, started_at, duration_ms, outcome, status_code, error FROM events.webhook_attempts"
                " WHERE delivery_id = CAST(:id AS uuid) ORDER BY number"
            ),
            {"id": delivery_id},
        )
        return _delivery(row, tuple(Attempt(**{**a._mapping, "outcome": AttemptOutcome(a.outcome)}) for a in attempts))

    async def redeliver(self, conn: AsyncConnection, delivery_id: str) -> bool:
        """A finished delivery is pending again, due now, with a fresh round of tries; False if it is pending."""
        result = await conn.execute(
            sa.text(
                "UPDATE events.webhook_deliveries SET state = 'PENDING', round_tries = 0, next_attempt_at = now(),"
                " finished_at = NULL WHERE id = CAST(:id AS uuid) AND state <> 'PENDING'"
            ),
            {"id": delivery_id},
        )
        return result.rowcount == 1

    async def backlog(self, now: dt.datetime) -> tuple[int, float]:
        """Pending deliveries of enabled endpoints, and the age in seconds of the oldest (0 when none)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT count(*) AS n, min(d.created_at) AS oldest FROM events.webhook_deliveries d"
                        " JOIN events.webhook_endpoints e ON e.id = d.endpoint_id AND e.state = 'ENABLED'"
                        " WHERE d.state = 'PENDING'"
                    )
                )
            ).one()
        return row.n, 0.0 if row.oldest is None else max(0.0, (now - row.oldest).total_seconds())
