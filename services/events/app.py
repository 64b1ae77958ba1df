"""Wires the events service: its repositories, the feed readers, the webhook dispatcher, the servicers and
the shared server."""

from coupons.events.v1 import events_pb2_grpc, webhooks_pb2_grpc
from kernel import db
from kernel.components import EVENT_SOURCES
from kernel.db import create_engine, create_statement_pool
from kernel.grpc_clients import identity_of, remote_verifier
from kernel.purge import Purger, idempotency_keys
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import Settings
from kernel.tokens import TokenVerifier
from services.events.dispatcher import Dispatcher
from services.events.ingest import Ingester
from services.events.repository import EventsRepository, old_events
from services.events.servicer import SERVICE_NAME, EventServicer
from services.events.webhook_repository import WebhookRepository, finished_deliveries
from services.events.webhook_servicer import SERVICE_NAME as WEBHOOK_SERVICE_NAME
from services.events.webhook_servicer import WebhookServicer
from services.events.webhooks import WebhooksDomain


async def build(settings: Settings, verifier: TokenVerifier | None = None):
    engine = create_engine(settings)
    # The dispatcher's rounds: only the worker that runs the background jobs connects, at its first round.
    statements = create_statement_pool(settings, min_size=0)
    await statements.open(wait=False)
    purger = Purger(
        settings,
        [
            idempotency_keys("events"),
            finished_deliveries(settings.webhook_retention_seconds),
            old_events(settings.events_retention_seconds),
        ],
    )
    identity = identity_of(settings)
    repository, webhook_repository = EventsRepository(engine), WebhookRepository(engine, statements)
    sources = {name: getattr(settings, f"{name}_addr") for name in EVENT_SOURCES}
    ingester = Ingester(repository, webhook_repository, sources, identity, settings.events_poll_seconds)
    dispatcher = Dispatcher(webhook_repository, settings)
    servicer = EventServicer(repository, settings.events_poll_seconds)
    webhooks = WebhooksDomain(
        webhook_repository, allow_plain_http=not settings.production, allowed_networks=dispatcher.allowed_networks
    )
    webhook_servicer = WebhookServicer(webhooks)

    def register(server) -> None:
        events_pb2_grpc.add_EventServiceServicer_to_server(servicer, server)
        webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(webhook_servicer, server)

    background = [ingester.run]
    if settings.webhook_concurrency:
        background.append(dispatcher.run)
    if purger.enabled:
        background.append(purger.run)
    spec = ServiceSpec(
        component="events",
        service_names=(SERVICE_NAME, WEBHOOK_SERVICE_NAME),
        register=register,
        ready=lambda: db.ping(engine),
        background=tuple(background),
    )

    async def cleanup() -> None:
        await purger.close()
        await ingester.close()
        await dispatcher.close()
        await identity.close()
        await statements.close()
        await engine.dispose()

    server = GrpcServer(
        spec, verifier or remote_verifier(settings, identity), revocation_poll_seconds=settings.revocation_poll_seconds
    )
    return server, cleanup
