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
from sqlalchemy.ext.asyncio import AsyncEngine

from coupons.events.v1 import events_pb2, events_pb2_grpc
from kernel.errors import InvalidArgument
from kernel.paging import decode_cursor, encode_token
from kernel.timestamps import to_timestamp

SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["EventFeedService"].full_name
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000
_COLUMNS = "id, txid::text AS txid_text, type, occurred_at, subject_type, subject_id, book_id::text AS book_id, "
_COLUMNS += "actor, request_id, data_schema, data::text AS data"


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
