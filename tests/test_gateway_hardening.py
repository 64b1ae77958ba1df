"""The gateway's hardening, over real HTTP against the echo backend (fixtures_gateway.ECHO_PROTO): which methods are
routed at all, and what a caller gets wrong (bodies, headers, slow uploads) never ending in a 500."""

import json

import pytest
from openapi_spec_validator import validate

from gateway.config import GatewayConfig
from tests.fixtures_gateway import ECHO_SERVICE, INTERNAL_SERVICE
from tests.test_gateway_transcoding import reason_of


@pytest.fixture(scope="module")
async def default_gateway_url(start_gateway, echo_server):
    """The echo backend behind a gateway with the default settings: no service's unannotated methods routed."""
    return await start_gateway({"echo": echo_server})


@pytest.fixture(scope="module")
async def listed_gateway_url(start_gateway, echo_server, echo_descriptor_set):
    """Both echo services listed in GATEWAY_UNBOUND_SERVICES, the internal one too."""
    return await start_gateway({"echo": echo_server}, descriptor_set=str(echo_descriptor_set),
                               unbound_services=(ECHO_SERVICE, INTERNAL_SERVICE))


async def status_of(http, method: str, url: str) -> tuple[int, dict]:
    async with http.request(method, url, json={} if method == "POST" else None) as response:
        return response.status, await response.json()


# --- 1. unbound methods and internal services --------------------------------------------------------------------

@pytest.mark.parametrize("path", [f"/{ECHO_SERVICE}/Unannotated", "/grpc.health.v1.Health/Check"])
async def test_unannotated_methods_are_not_routed_by_default(http, default_gateway_url, listed_gateway_url,
                                                             echo_gateway_url, path):
    status, body = await status_of(http, "POST", default_gateway_url + path)
    assert status == 404 and reason_of(body) == "ROUTE_NOT_FOUND"
    listed = echo_gateway_url if "Health" in path else listed_gateway_url
    status, _ = await status_of(http, "POST", listed + path)
    assert status == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/service-only/x"),  # annotated, CALLER_SERVICE only
    ("POST", f"/{ECHO_SERVICE}/UnannotatedServiceOnly"),  # listed service, CALLER_SERVICE only
    ("GET", "/v1/internal/ping"),  # annotated, in an internal service
    ("POST", f"/{INTERNAL_SERVICE}/Unannotated"),  # an internal service, even though listed
])
async def test_service_only_methods_are_never_routed(http, listed_gateway_url, method, path):
    status, body = await status_of(http, method, listed_gateway_url + path)
    assert status == 404 and reason_of(body) == "ROUTE_NOT_FOUND"


async def test_a_method_people_may_call_too_is_routed(http, listed_gateway_url):
    status, body = await status_of(http, "GET", f"{listed_gateway_url}/v1/admin-or-service/a1")
    assert status == 200 and body["id"] == "a1"


async def test_openapi_shows_access_rules_and_hides_what_is_not_routed(http, listed_gateway_url):
    async with http.get(f"{listed_gateway_url}/openapi.json") as response:
        document = await response.json()
    validate(document)
    assert document["paths"]["/v1/admin-or-service/{id}"]["get"]["x-callers"] == ["CALLER_ADMIN", "CALLER_SERVICE"]
    assert "x-callers" not in document["paths"]["/v1/echo/{id}"]["get"]  # no rule declared
    assert f"/{ECHO_SERVICE}/Unannotated" in document["paths"]
    for hidden in ("/v1/service-only/{id}", f"/{ECHO_SERVICE}/UnannotatedServiceOnly", "/v1/internal/ping"):
        assert hidden not in document["paths"]
    assert INTERNAL_SERVICE not in json.dumps(document)


def test_unbound_services_setting(monkeypatch):
    monkeypatch.delenv("GATEWAY_UNBOUND_SERVICES", raising=False)
    assert GatewayConfig.from_env().unbound_services == ()
    monkeypatch.setenv("GATEWAY_UNBOUND_SERVICES", f" {ECHO_SERVICE}, grpc.health.v1.Health ,")
    assert GatewayConfig.from_env().unbound_services == (ECHO_SERVICE, "grpc.health.v1.Health")
