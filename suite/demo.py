"""Demo data beyond the users (SPEC §8), loaded through the services' own gRPC APIs as the demo admin."""

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from kernel.grpc_clients import channel
from suite.processes import Suite


async def _admin_token(suite: Suite) -> str:
    async with channel(f"127.0.0.1:{suite.ports['auth']}") as auth_channel:
        session = await auth_pb2_grpc.AuthServiceStub(auth_channel).Login(
            auth_pb2.LoginRequest(email="admin@example.com", password="admin123"))
    return session.access_token


async def load(suite: Suite) -> str:
    """Loads what the running services support; returns extra lines for the banner."""
    await _admin_token(suite)
    return ""
