"""Wires the pools service: repository, clients to auth and redemption, domain, servicer and the shared server."""

from coupons.pools.v1 import pools_pb2_grpc
from kernel import db, event_feed
from kernel.db import create_engine
from kernel.directory import Directory
from kernel.grpc_clients import identity_of, remote_verifier
from kernel.purge import Purger, idempotency_keys
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import Settings
from kernel.tokens import TokenVerifier
from services.pools.clients import Ledger
from services.pools.domain import PoolsDomain
from services.pools.repository import SCHEMA, PoolsRepository
from services.pools.servicer import SERVICE_NAME, PoolsServicer


async def build(settings: Settings, verifier: TokenVerifier | None = None):
    engine = create_engine(settings)
    purger = Purger(
        settings, [idempotency_keys(SCHEMA), event_feed.outbox_rows(SCHEMA, settings.outbox_retention_seconds)]
    )
    identity = identity_of(settings)
    ledger = Ledger(settings.redemption_addr, identity)
    servicer = PoolsServicer(PoolsDomain(PoolsRepository(engine), Directory(identity), ledger))

    def register(server) -> None:
        pools_pb2_grpc.add_PoolServiceServicer_to_server(servicer, server)
        event_feed.add_to_server(server, engine, SCHEMA, "pools")

    spec = ServiceSpec(
        component="pools",
        service_names=(SERVICE_NAME, event_feed.SERVICE_NAME),
        register=register,
        ready=lambda: db.ping(engine),
        background=(purger.run,) if purger.enabled else (),
    )

    async def cleanup() -> None:
        await purger.close()
        await ledger.close()
        await identity.close()
        await engine.dispose()

    server = GrpcServer(
        spec, verifier or remote_verifier(settings, identity), revocation_poll_seconds=settings.revocation_poll_seconds
    )
    return server, cleanup
