"""Wires the redemption service: repository, domain, servicer and the shared server."""

from coupons.redemption.v1 import redemption_pb2_grpc
from kernel.db import create_engine
from kernel.grpc_clients import remote_verifier
from kernel.server import GrpcServer, ServiceSpec
from kernel.settings import Settings
from kernel.tokens import TokenVerifier
from services.redemption.domain import RedemptionDomain
from services.redemption.queries import LedgerQueries
from services.redemption.repository import RedemptionRepository
from services.redemption.servicer import SERVICE_NAME, RedemptionServicer


async def build(settings: Settings, verifier: TokenVerifier | None = None):
    engine = create_engine(settings)
    repository = RedemptionRepository(engine)
    servicer = RedemptionServicer(RedemptionDomain(repository), LedgerQueries(repository))
    spec = ServiceSpec(
        component="redemption",
        service_names=(SERVICE_NAME,),
        register=lambda server: redemption_pb2_grpc.add_RedemptionServiceServicer_to_server(servicer, server),
    )
    return GrpcServer(spec, verifier or remote_verifier(settings)), engine.dispose
