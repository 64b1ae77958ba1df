"""Reads every owning service's event feed into the events schema, as the events service itself.

One loop per source. Each round is one transaction: lock the source's cursor row (SKIP LOCKED, so a
second replica skips a source the first is reading instead of reading it twice), ask the source for the
entries after it, keep them, move the cursor, commit. A source that is down is retried after a pause;
nothing is lost, since the source keeps its outbox and the cursor moves only with the stored events. The
same transaction makes the webhook deliveries of the events it stores.
"""

import asyncio
import logging
import time

from coupons.events.v1 import events_pb2, events_pb2_grpc
from kernel import grpc_clients
from kernel.grpc_clients import ServiceIdentity
from kernel.metrics import EVENTS_INGEST_LAG
from kernel.remote_errors import remote_call
from services.events.repository import EventsRepository
from services.events.webhook_repository import WebhookRepository

log = logging.getLogger("services.events.ingest")
BATCH = 500
CALL_TIMEOUT_SECONDS = 10.0
RETRY_SECONDS = 1.0


class Ingester:
    def __init__(
        self,
        repository: EventsRepository,
        webhooks: WebhookRepository,
        sources: dict[str, str],
        identity: ServiceIdentity,
        poll_seconds: float,
    ):
        self.repository = repository
        self.webhooks = webhooks
        self.identity = identity
        self.poll_seconds = poll_seconds
        self.channels = {name: grpc_clients.channel(address) for name, address in sources.items()}
        self.feeds = {name: events_pb2_grpc.EventFeedServiceStub(c) for name, c in self.channels.items()}

    async def run(self) -> None:
        await asyncio.gather(*(self._follow(name) for name in self.feeds))

    async def _follow(self, source: str) -> None:
        while True:
            try:
                read = await self.read_once(source)
            except Exception as error:  # a source or the database away: try again, the cursor has not moved
                log.warning("reading a feed failed", extra={"fields": {"source": source, "error": str(error)[:200]}})
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if read < BATCH:
                await asyncio.sleep(self.poll_seconds)

    async def read_once(self, source: str) -> int:
        """One round for one source; how many entries it read (0 when another replica holds the source)."""
        async with self.repository.engine.begin() as conn:
            cursor = await self.repository.claim_source(conn, source)
            if cursor is None:
                return 0
            request = events_pb2.ReadEventFeedRequest(after_cursor=cursor, limit=BATCH)
            with remote_call(source, doing="reading its event feed"):
                response = await self.feeds[source].ReadEventFeed(
                    request, metadata=await self.identity.metadata(), timeout=CALL_TIMEOUT_SECONDS
                )
            events = list(response.events)
            if events:
                stored = await self.repository.store(conn, source, events, events[-1].cursor)
                await self.webhooks.fan_out(conn, stored)  # the deliveries commit with the events they deliver
                EVENTS_INGEST_LAG.labels(source).set(max(0.0, time.time() - events[-1].time.ToSeconds()))
            return len(events)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
