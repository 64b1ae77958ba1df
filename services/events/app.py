"""Wires the events service: its repository, the feed readers, the servicer and the shared server."""

from coupons.events.v1 import events_pb2_grpc
from kernel import db
from kernel.components import EVENT_SOURCES
from kernel.db import create_engine
from kernel.grpc_clients import identity_of, remote_verifier
from kernel.purge import Purger
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import Settings
from kernel.tokens import TokenVerifier
from services.events.ingest import Ingester
from services.events.repository import EventsRepository, old_events
from services.events.servicer import SERVICE_NAME, EventServicer


async def build(settings: Settings, verifier: TokenVerifier | None = None):
    engine = create_engine(settings)
    purger = Purger(settings, [old_events(settings.events_retention_seconds)])
    identity = identity_of(settings)
    repository = EventsRepository(engine)
    sources = {name: getattr(settings, f"{name}_addr") for name in EVENT_SOURCES}
    ingester = Ingester(repository, sources, identity, settings.events_poll_seconds)
    servicer = EventServicer(repository, settings.events_poll_seconds)
    spec = ServiceSpec(
        component="events",
        service_names=(SERVICE_NAME,),
        register=lambda server: events_pb2_grpc.add_EventServiceServicer_to_server(servicer, server),
        ready=lambda: db.ping(engine),
        background=(ingester.run, purger.run) if purger.enabled else (ingester.run,),
    )

    async def cleanup() -> None:
        await purger.close()
        await ingester.close()
        await identity.close()
        await engine.dispose()

    server = GrpcServer(
        spec, verifier or remote_verifier(settings, identity), revocation_poll_seconds=settings.revocation_poll_seconds
    )
    return server, cleanup
