"""The internal event feed every owning service serves from its outbox (coupons.events.v1.EventFeedService).

A service's outbox is a `<schema>.event_feed` relation (redemption: a view over its history) with the
columns below and an index on (txid, id). Rows are read in (txid, id) order, and only rows whose
transaction is older than every transaction still running (`pg_snapshot_xmin`): identity numbers are
handed out before commit, so a transaction holding number 9 may commit after number 10 is read; its txid
is then at or above the snapshot's xmin, and it is read on a later call, after the cursor's position.
Every row below xmin is final, so a cursor never passes a row that is still to appear. A long transaction
anywhere in the database delays the feed (never loses an event): docs/events.md.
"""

import json

import sqlalchemy as sa
from google.protobuf import struct_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coupons.events.v1 import events_pb2, events_pb2_grpc
from kernel.context import principal_var, request_id_var
from kernel.errors import InvalidArgument
from kernel.paging import decode_cursor, encode_token
from kernel.purge import Target
from kernel.timestamps import to_timestamp

SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["EventFeedService"].full_name
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
_COLUMNS = "id, txid::text AS txid_text, type, occurred_at, subject_type, subject_id, book_id::text AS book_id, "
_COLUMNS += "actor, request_id, data_schema, data::text AS data"


def create_outbox(schema: str) -> str:
    """The DDL of a service's outbox table `<schema>.event_feed`, for its migration (redemption's is a view)."""
    return f"""
        CREATE TABLE {schema}.event_feed (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            type text NOT NULL,
            occurred_at timestamptz NOT NULL DEFAULT now(),
            subject_type text NOT NULL,
            subject_id text NOT NULL,
            book_id uuid,
            actor text NOT NULL,
            request_id text NOT NULL DEFAULT '',
            data_schema text NOT NULL,
            data jsonb NOT NULL
        );
        CREATE INDEX event_feed_by_txid ON {schema}.event_feed (txid, id);
        CREATE INDEX event_feed_by_occurred_at ON {schema}.event_feed (occurred_at);
    """


def outbox_rows(schema: str, retention_seconds: int) -> Target:
    """The retention purge's outbox rows past their age (redemption's outbox is its history: kept)."""
    return Target(f"{schema}.event_feed", f"occurred_at < now() - make_interval(secs => {int(retention_seconds)})")


def feed_cursor(txid: str, row_id: int) -> str:
    return encode_token({"x": txid, "i": row_id})


def decode_feed_cursor(token: str, field: str = "after_cursor") -> tuple[str, int]:
    """(txid, id) of a feed cursor; (0, 0) before the first row."""
    cursor = decode_cursor(token, {"x": str, "i": int}, field)
    if cursor is None:
        return "0", 0
    if not cursor["x"].isdigit() or len(cursor["x"]) > 20:
        raise InvalidArgument.field(field, "is not a cursor this feed gave", reason="INVALID_CURSOR")
    return cursor["x"], cursor["i"]


def event_of(row, source: str, row_id: int, cursor: str) -> events_pb2.Event:
    data = struct_pb2.Struct()
    data.update(json.loads(row.data))
    return events_pb2.Event(
        id=f"{source}-{row_id}",
        cursor=cursor,
        type=row.type,
        time=to_timestamp(row.occurred_at),
        source=source,
        subject_type=row.subject_type,
        subject_id=row.subject_id,
        book_id=row.book_id or "",
        actor=row.actor,
        request_id=row.request_id,
        data_schema=row.data_schema,
        data=data,
    )


async def record(
    conn: AsyncConnection, schema: str, event_type: str, subject: tuple[str, str], book_id: str, data: dict
) -> None:
    """Appends an event to the schema's outbox, in the caller's transaction: it commits or rolls back with
    the change it describes. Who and which request come from the call being served."""
    principal = principal_var.get()
    subject_type, subject_id = subject
    await conn.execute(
        sa.text(
            f"INSERT INTO {schema}.event_feed (type, subject_type, subject_id, book_id, actor, request_id,"
            " data_schema, data) VALUES (:type, :subject_type, :subject_id, CAST(NULLIF(:book_id, '') AS uuid),"
            " :actor, :request_id, :data_schema, CAST(:data AS jsonb))"
        ),
        {
            "type": event_type,
            "subject_type": subject_type,
            "subject_id": str(subject_id),
            "book_id": str(book_id or ""),
            "actor": principal.actor if principal else "",
            "request_id": request_id_var.get(),
            "data_schema": f"coupons.events.{subject_type}.v1",
            "data": json.dumps(data, default=str),
        },
    )


class EventFeedServicer(events_pb2_grpc.EventFeedServiceServicer):
    def __init__(self, engine: AsyncEngine, schema: str, source: str):
        self.engine = engine
        self.source = source
        self._read = sa.text(
            f"SELECT {_COLUMNS} FROM {schema}.event_feed"
            " WHERE (txid, id) > (CAST(:txid AS xid8), :id) AND txid < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY txid, id LIMIT :limit"
        )

    async def ReadEventFeed(
        self, request: events_pb2.ReadEventFeedRequest, context
    ) -> events_pb2.ReadEventFeedResponse:
        if not 0 <= request.limit <= MAX_LIMIT:
            raise InvalidArgument.field("limit", f"must be between 0 and {MAX_LIMIT}", reason="INVALID_LIMIT")
        txid, row_id = decode_feed_cursor(request.after_cursor)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(self._read, {"txid": txid, "id": row_id, "limit": request.limit or DEFAULT_LIMIT})
            ).all()
        return events_pb2.ReadEventFeedResponse(
            events=[event_of(row, self.source, row.id, feed_cursor(row.txid_text, row.id)) for row in rows]
        )


def add_to_server(server, engine: AsyncEngine, schema: str, source: str) -> None:
    """Serves the schema's outbox as `source`'s event feed (list SERVICE_NAME among the server's services)."""
    events_pb2_grpc.add_EventFeedServiceServicer_to_server(EventFeedServicer(engine, schema, source), server)
