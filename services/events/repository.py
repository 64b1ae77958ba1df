"""The events schema: the gathered events, and how far each source's feed has been read."""

import json
from dataclasses import dataclass

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coupons.events.v1 import events_pb2
from kernel.purge import Target

SCHEMA = "events"


def event_columns(alias: str = "") -> str:
    """An event's columns as event_of reads them; `alias` qualifies them in a join."""
    a = f"{alias}." if alias else ""
    return (
        f"{a}seq, {a}txid::text AS txid_text, {a}source, {a}source_id, {a}type, {a}occurred_at, {a}subject_type,"
        f" {a}subject_id, {a}book_id::text AS book_id, {a}actor, {a}request_id, {a}data_schema, {a}data::text AS data"
    )


_COLUMNS = event_columns()
# Rows of finished transactions only (kernel/event_feed.py explains why a cursor needs this).
_FINISHED = "txid < pg_snapshot_xmin(pg_current_snapshot())"


@dataclass(frozen=True)
class WatchFilter:
    types: tuple[str, ...]
    book_id: str


def _row_of(event: events_pb2.Event) -> dict:
    return {
        "source_id": int(event.id.rsplit("-", 1)[1]),
        "type": event.type,
        "occurred_at": event.time.ToJsonString(),
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "book_id": event.book_id,
        "actor": event.actor,
        "request_id": event.request_id,
        "data_schema": event.data_schema,
        "data": json_format.MessageToDict(event.data),
    }


@dataclass(frozen=True)
class StoredEvent:
    """An event kept by this transaction, as the webhook fan-out matches it."""

    seq: int
    type: str
    book_id: str | None


def old_events(retention_seconds: int) -> Target:
    """Events past their retention, for the purge; a watch resumed from an older cursor starts at the oldest kept."""
    return Target("events.events", f"ingested_at < now() - make_interval(secs => {int(retention_seconds)})")


class EventsRepository:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def claim_source(self, conn: AsyncConnection, source: str) -> str | None:
        """The source's feed cursor, locked for this transaction; None while another replica reads it."""
        await conn.execute(
            sa.text("INSERT INTO events.source_cursors (source) VALUES (:s) ON CONFLICT DO NOTHING"), {"s": source}
        )
        row = (
            await conn.execute(
                sa.text("SELECT after_cursor FROM events.source_cursors WHERE source = :s FOR UPDATE SKIP LOCKED"),
                {"s": source},
            )
        ).first()
        return None if row is None else row.after_cursor

    async def store(
        self, conn: AsyncConnection, source: str, events: list[events_pb2.Event], cursor: str
    ) -> list[StoredEvent]:
        """Keeps the events in one statement (an entry read twice is kept once) and moves the source's
        cursor past them; answers the events newly kept."""
        stored: list[StoredEvent] = []
        if events:
            rows = await conn.execute(
                sa.text(
                    "INSERT INTO events.events (source, source_id, type, occurred_at, subject_type, subject_id,"
                    " book_id, actor, request_id, data_schema, data) SELECT :source, r.source_id, r.type,"
                    " r.occurred_at, r.subject_type, r.subject_id, CAST(NULLIF(r.book_id, '') AS uuid), r.actor,"
                    " r.request_id, r.data_schema, r.data FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS"
                    " r(source_id bigint, type text, occurred_at timestamptz, subject_type text, subject_id text,"
                    " book_id text, actor text, request_id text, data_schema text, data jsonb)"
                    " ON CONFLICT ON CONSTRAINT events_once_per_source_entry DO NOTHING"
                    " RETURNING seq, type, book_id::text AS book_id"
                ),
                {"source": source, "rows": json.dumps([_row_of(event) for event in events])},
            )
            stored = [StoredEvent(row.seq, row.type, row.book_id) for row in rows]
        await conn.execute(
            sa.text("UPDATE events.source_cursors SET after_cursor = :c, read_at = now() WHERE source = :s"),
            {"c": cursor, "s": source},
        )
        return stored

    async def after(self, txid: str, seq: int, where: WatchFilter, limit: int) -> tuple[list[sa.Row], tuple[str, int]]:
        """Up to `limit` matching events after (txid, seq) in stream order, and, from the same snapshot, the
        position of the newest finished event of any kind: when fewer than `limit` matched, a watch may move
        there, so a filter that rarely matches does not rescan what it has seen."""
        conditions = ["(txid, seq) > (CAST(:txid AS xid8), :seq)", "txid < bound.xmin"]
        params: dict = {"txid": txid, "seq": seq, "limit": limit}
        if where.types:
            conditions.append("type = ANY(:types)")
            params["types"] = list(where.types)
        if where.book_id:
            conditions.append("book_id = CAST(:book_id AS uuid)")
            params["book_id"] = where.book_id
        query = (
            "WITH bound AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),"
            f" matched AS (SELECT {_COLUMNS}, txid AS order_txid FROM events.events, bound"
            f" WHERE {' AND '.join(conditions)}"
            " ORDER BY txid, seq LIMIT :limit),"
            " newest AS (SELECT txid::text AS top_txid, seq AS top_seq FROM events.events, bound"
            " WHERE txid < bound.xmin ORDER BY txid DESC, seq DESC LIMIT 1)"
            " SELECT matched.*, newest.* FROM newest LEFT JOIN matched ON true ORDER BY matched.order_txid, matched.seq"
        )
        async with self.engine.connect() as conn:
            rows = list((await conn.execute(sa.text(query), params)).all())
        if not rows:
            return [], (txid, seq)
        return [row for row in rows if row.seq is not None], (rows[0].top_txid, rows[0].top_seq)

    async def newest(self) -> tuple[str, int]:
        """The position of the newest finished event ("0", 0 when there is none): where "from now" starts."""
        query = (
            f"SELECT txid::text AS txid_text, seq FROM events.events WHERE {_FINISHED}"
            " ORDER BY txid DESC, seq DESC LIMIT 1"
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.text(query))).first()
        return ("0", 0) if row is None else (row.txid_text, row.seq)
