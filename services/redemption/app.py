"""Wires the redemption service: repository, domain, servicers and the shared server."""

from coupons.redemption.v1 import redemption_pb2_grpc
from kernel import db, event_feed
from kernel.db import create_engine, create_statement_pool
from kernel.directory import Directory
from kernel.grpc_clients import identity_of, remote_verifier
from kernel.purge import Purger, idempotency_keys
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import Settings
from kernel.tokens import TokenVerifier
from services.redemption.domain import RedemptionDomain
from services.redemption.queries import LedgerQueries
from services.redemption.repository import SCHEMA, RedemptionRepository
from services.redemption.servicer import SERVICE_NAMES, LedgerInternalServicer, RedemptionServicer


async def build(settings: Settings, verifier: TokenVerifier | None = None):
    engine = create_engine(settings)
    statements = create_statement_pool(settings)
    await statements.open(wait=False)  # connects in the background: a database still starting is no failure
    purger = Purger(settings, [idempotency_keys(SCHEMA)])
    identity = identity_of(settings)
    repository = RedemptionRepository(engine, statements)
    domain, queries = RedemptionDomain(repository, Directory(identity)), LedgerQueries(repository)
    public, internal = RedemptionServicer(domain, queries), LedgerInternalServicer(domain, queries)

    def register(server) -> None:
        redemption_pb2_grpc.add_RedemptionServiceServicer_to_server(public, server)
        redemption_pb2_grpc.add_LedgerInternalServiceServicer_to_server(internal, server)
        event_feed.add_to_server(server, engine, SCHEMA, "redemption")  # history is the ledger's outbox

    async def cleanup() -> None:
        await purger.close()
        await identity.close()
        await statements.close()
        await engine.dispose()

    spec = ServiceSpec(
        component="redemption",
        service_names=(*SERVICE_NAMES, event_feed.SERVICE_NAME),
        register=register,
        ready=lambda: db.ping(engine),
        background=(purger.run,) if purger.enabled else (),
    )
    server = GrpcServer(
        spec, verifier or remote_verifier(settings, identity), revocation_poll_seconds=settings.revocation_poll_seconds
    )
    return server, cleanup
