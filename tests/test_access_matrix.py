"""The authorization matrix: every method of every service, read from the descriptors, called with no
token, a USER's, an ADMIN's and a SERVICE token, each answer checked against the method's declared
access rule. A method without a rule fails here (and the server refuses to start)."""

import uuid

import grpc
import pytest
from google.protobuf import message_factory

from kernel import access
from kernel.context import ADMIN, SERVICE, USER
from kernel.tokens import TokenIssuer
from services.auth.servicer import SERVICE_NAMES as AUTH
from services.books.servicer import SERVICE_NAME as BOOKS
from services.events.servicer import SERVICE_NAME as EVENTS
from services.events.webhook_servicer import SERVICE_NAME as WEBHOOKS
from services.pools.servicer import SERVICE_NAME as POOLS
from services.redemption.servicer import SERVICE_NAMES as REDEMPTION
from tests.support import rich_error, serving, settings_for

# A refusal by the access rule, as opposed to the domain answering the (empty) request.
RULE_REFUSALS = {
    (grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN"),
    (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_ONLY"),
    (grpc.StatusCode.PERMISSION_DENIED, "PERSON_ONLY"),
    (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
}
ADMITS = {  # caller kind -> the rules that admit it
    "anonymous": {access.ANYONE},
    USER: {access.ANYONE, access.USER, access.OWNER},
    ADMIN: {access.ANYONE, access.USER, access.OWNER, access.ADMIN_ONLY},
    SERVICE: {access.ANYONE, access.SERVICE_ONLY},
}
EXPECTED_REFUSAL = {
    "anonymous": "MISSING_TOKEN",
    USER: {"PERMISSION_DENIED", "SERVICE_ONLY"},
    ADMIN: {"SERVICE_ONLY"},
    SERVICE: {"PERSON_ONLY"},
}


ALL_SERVICES = (AUTH, (BOOKS,), REDEMPTION, (POOLS,), (EVENTS, WEBHOOKS))


@pytest.fixture(scope="module")
async def events_server(database_url, auth_server, books_server, redemption_server, pools_server):
    from services.events.app import build

    sources = {"books_addr": books_server, "redemption_addr": redemption_server, "pools_addr": pools_server}
    async with serving(build, "events", database_url, auth_server, **sources, webhook_concurrency=0) as address:
        yield address


@pytest.fixture(scope="module")
def servers(auth_server, books_server, redemption_server, pools_server, events_server) -> dict[str, tuple[str, ...]]:
    return dict(
        zip((auth_server, books_server, redemption_server, pools_server, events_server), ALL_SERVICES, strict=True)
    )


@pytest.fixture(scope="module")
def tokens(signing_key, ledger) -> dict[str, tuple]:
    settings = settings_for("auth", "")
    issuer = TokenIssuer(signing_key, settings.jwt_issuer, settings.jwt_audience, ttl_seconds=600)
    user, admin = ledger.caller(USER), ledger.caller(ADMIN)
    bearer = {
        USER: issuer.issue(user.user_id, USER),
        ADMIN: issuer.issue(admin.user_id, ADMIN),
        SERVICE: issuer.issue("service:books", SERVICE),
    }
    return {"anonymous": (), **{kind: (("authorization", f"Bearer {token}"),) for kind, token in bearer.items()}}


def _methods(service_names: tuple[str, ...]):
    from google.protobuf import descriptor_pool

    for service_name in service_names:
        for method in descriptor_pool.Default().FindServiceByName(service_name).methods:
            yield f"/{service_name}/{method.name}", method


async def _call(channel: grpc.aio.Channel, path: str, method, metadata) -> grpc.StatusCode | tuple:
    """Calls with an empty request; the status code and reason of the answer (OK when it succeeded)."""
    request = message_factory.GetMessageClass(method.input_type)()
    response_type = message_factory.GetMessageClass(method.output_type)
    codec = {"request_serializer": type(request).SerializeToString, "response_deserializer": response_type.FromString}
    try:
        if method.client_streaming:
            call = channel.stream_unary(path, **codec)(iter([request]), metadata=metadata, timeout=10)
            await call
        elif method.server_streaming:  # a watch admitted waits for events: its deadline ends it
            async for _ in channel.unary_stream(path, **codec)(request, metadata=metadata, timeout=2):
                pass
        else:
            await channel.unary_unary(path, **codec)(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code(), rich_error(error).reason
    return grpc.StatusCode.OK, ""


def test_every_method_declares_an_access_rule():
    unruled = [path for names in ALL_SERVICES for path, method in _methods(names) if not access.rule_of(method).callers]
    assert unruled == []


async def test_every_method_admits_exactly_the_callers_its_rule_names(servers, tokens):
    checked = 0
    for address, service_names in servers.items():
        async with grpc.aio.insecure_channel(address) as channel:
            for path, method in _methods(service_names):
                rule = access.rule_of(method)
                for kind, metadata in tokens.items():
                    code, reason = await _call(channel, path, method, metadata)
                    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (path, kind, reason)
                    if rule.callers & ADMITS[kind]:
                        assert (code, reason) not in RULE_REFUSALS, f"{path} refused {kind}: {code.name} {reason}"
                    else:
                        expected = EXPECTED_REFUSAL[kind]
                        assert reason in ({expected} if isinstance(expected, str) else expected), (path, kind, reason)
                    checked += 1
    assert checked == 4 * sum(len(list(_methods(names))) for names in servers.values())


async def test_a_user_cannot_act_on_another_users_coupons(ledger):
    """OWNER methods: the domain checks ownership; someone else's code reads as missing."""
    from coupons.redemption.v1 import redemption_pb2 as pb

    _, code, holder = await ledger.held_coupon()
    other, stub = ledger.caller(), ledger.stub
    owner_methods = {
        path.rpartition("/")[2]
        for path, method in _methods(REDEMPTION)
        if access.rule_of(method).callers == {access.OWNER}
    }
    cases = {
        "LockCoupon": (stub.LockCoupon(pb.LockCouponRequest(code=code), metadata=other.metadata), "COUPON_NOT_FOUND"),
        "UnlockCoupon": (
            stub.UnlockCoupon(pb.UnlockCouponRequest(code=code), metadata=other.metadata),
            "COUPON_NOT_FOUND",
        ),
        "RedeemCoupon": (
            stub.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=other.metadata),
            "COUPON_NOT_FOUND",
        ),
        "GetCoupon": (stub.GetCoupon(pb.GetCouponRequest(code=code), metadata=other.metadata), "COUPON_NOT_FOUND"),
        "ValidateCoupon": (
            stub.ValidateCoupon(pb.ValidateCouponRequest(code=code), metadata=other.metadata),
            "COUPON_NOT_FOUND",
        ),
        "ListUserCoupons": (
            stub.ListUserCoupons(pb.ListUserCouponsRequest(user_id=holder.user_id), metadata=other.metadata),
            "NOT_YOUR_ACCOUNT",
        ),
        "AssignRandomCoupon": (
            stub.AssignRandomCoupon(
                pb.AssignRandomCouponRequest(book_id=str(uuid.uuid4()), user_id=holder.user_id), metadata=other.metadata
            ),
            "NOT_YOUR_ACCOUNT",
        ),
    }
    assert set(cases) == owner_methods, "every OWNER method needs a case here"
    for name, (call, reason) in cases.items():
        try:
            await call
        except grpc.aio.AioRpcError as error:
            assert rich_error(error).reason == reason, name
        else:
            raise AssertionError(f"{name} acted on another user's coupon")


async def test_the_gateway_reaches_no_internal_method(start_gateway, http, servers, tokens):
    """Every service-only method of every service is off the web, listed as unbound or not."""
    backends = dict(zip(("auth", "books", "redemption", "pools", "events"), servers, strict=True))
    internal = [
        (path, service)
        for address, names in servers.items()
        for service in names
        for path, method in _methods((service,))
        if access.rule_of(method).callers == {access.SERVICE_ONLY}
    ]
    assert {service for _, service in internal} == {
        "coupons.auth.v1.AuthInternalService",
        "coupons.redemption.v1.LedgerInternalService",
    }
    gateway = await start_gateway(backends, unbound_services=tuple(s for _, s in internal))
    for path, _ in internal:
        async with http.post(gateway + path, json={}, headers={"authorization": tokens[ADMIN][0][1]}) as response:
            assert response.status == 404, path
    async with http.get(f"{gateway}/openapi.json") as response:
        document = await response.json()
    assert not [p for p in document["paths"] if "Internal" in p or "PutBookRules" in p or "BulkAssign" in p]
    assert all(
        operation.get("x-callers") != ["CALLER_SERVICE"]
        for item in document["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
    )
