"""Wires the books service: repository, ledger client, domain, servicer and the shared server."""

from coupons.books.v1 import books_pb2_grpc
from kernel import db, event_feed, grpc_clients
from kernel.db import create_engine
from kernel.purge import Purger, idempotency_keys
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import Settings
from kernel.tokens import TokenVerifier
from services.books.domain import BooksDomain
from services.books.generation import CodeGeneration
from services.books.ledger_client import LedgerClient
from services.books.repository import SCHEMA, BooksRepository
from services.books.servicer import SERVICE_NAME, BookServicer


async def build(settings: Settings, verifier: TokenVerifier | None = None):
    engine = create_engine(settings)
    purger = Purger(
        settings, [idempotency_keys(SCHEMA), event_feed.outbox_rows(SCHEMA, settings.outbox_retention_seconds)]
    )
    identity = grpc_clients.identity_of(settings)
    ledger = LedgerClient(settings.redemption_addr, identity)
    repository = BooksRepository(engine)
    books = BooksDomain(repository, ledger)
    servicer = BookServicer(books, CodeGeneration(books, repository, ledger))

    def register(server) -> None:
        books_pb2_grpc.add_BookServiceServicer_to_server(servicer, server)
        event_feed.add_to_server(server, engine, SCHEMA, "books")

    spec = ServiceSpec(
        component="books",
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
        spec,
        verifier or grpc_clients.remote_verifier(settings, identity),
        revocation_poll_seconds=settings.revocation_poll_seconds,
    )
    return server, cleanup
