"""EventService over gRPC: a request in, the events after its position out, then new ones as they come."""

import asyncio

from coupons.events.v1 import events_pb2, events_pb2_grpc
from services.events.repository import EventsRepository
from services.events.watch import Position, position_of, stored_event, watch_filter

SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
PAGE = 500


class EventServicer(events_pb2_grpc.EventServiceServicer):
    def __init__(self, repository: EventsRepository, poll_seconds: float):
        self.repository = repository
        self.poll_seconds = poll_seconds

    async def WatchEvents(self, request: events_pb2.WatchEventsRequest, context):
        where = watch_filter(list(request.types), request.book_id)
        position = position_of(request.after_cursor)
        if position is None:
            position = Position("0", 0) if request.from_oldest else Position(*await self.repository.newest())
        while True:
            rows, newest = await self.repository.after(position.txid, position.seq, where, PAGE)
            for row in rows:
                yield stored_event(row)
            if len(rows) == PAGE:
                position = Position(rows[-1].txid_text, rows[-1].seq)
                continue
            position = max(position, Position(*newest), key=Position.order)
            await asyncio.sleep(self.poll_seconds)
