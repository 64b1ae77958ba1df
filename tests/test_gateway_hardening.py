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


# --- 2. bodies that are JSON but not what the route takes ----------------------------------------------------------

def violations_of(status: dict) -> dict[str, str]:
    found = next((d for d in status["details"] if d["@type"].endswith("google.rpc.BadRequest")), {})
    return {v["field"]: v["description"] for v in found.get("field_violations", [])}


async def post_raw(http, url: str, body: bytes) -> tuple[int, dict]:
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        assert response.headers["X-Request-Id"]
        return response.status, await response.json()


@pytest.mark.parametrize("body, kind", [(b"null", "null"), (b"1", "a number"), (b"true", "a boolean"),
                                        (b'"x"', "a string"), (b"[]", "an array")])
@pytest.mark.parametrize("path, target", [("/v1/echo/b1:archive", "the request message"),  # body: "*"
                                          ("/v1/echo/b1", "the request's nested field")])  # body: "nested"
async def test_a_body_that_is_not_an_object_is_400(http, echo_gateway_url, body, kind, path, target):
    status, answer = await post_raw(http, echo_gateway_url + path, body)
    assert status == 400 and answer["code"] == 3 and reason_of(answer) == "INVALID_BODY"
    assert violations_of(answer) == {"body": f"must be an object ({target}), got {kind}"}


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                                  b"[" * 65 + b"]" * 65])
async def test_deeply_nested_json_is_400(http, default_gateway_url, body):
    status, answer = await post_raw(http, f"{default_gateway_url}/v1/echo/d1:archive", body)
    assert status == 400 and reason_of(answer) == "JSON_TOO_DEEP"
    assert "64" in violations_of(answer)["body"]


async def test_sixty_four_levels_are_within_the_bound(http, default_gateway_url):
    status, answer = await post_raw(http, f"{default_gateway_url}/v1/echo/d2:archive", b"[" * 64 + b"]" * 64)
    assert status == 400 and reason_of(answer) == "INVALID_BODY"  # deep enough to decode, but not an object


@pytest.mark.parametrize("body, reason", [
    (b'{"color": "\\ud800"}', "MALFORMED_JSON"),  # an unpaired surrogate where upb looks up an enum name
    (b'{"\\udfff": 1}', "MALFORMED_JSON"),  # ... or a field name
    (b'{"id": "\xed\xa0\x80"}', "MALFORMED_JSON"),  # a surrogate encoded as bytes: not UTF-8
    (b'{"id": "\xff"}', "MALFORMED_JSON"),
    (b'{"color": 1e999}', "INVALID_BODY"),  # infinity for an enum
    (b'{"size": 1e999}', "INVALID_BODY"),
    (b'{"labels": {"k": 1.5}}', "INVALID_BODY"),
])
async def test_other_json_misfits_are_400(http, echo_gateway_url, body, reason):
    status, answer = await post_raw(http, f"{echo_gateway_url}/v1/echo/j1:archive", body)
    assert status == 400 and reason_of(answer) == reason and "body" in violations_of(answer)


async def test_paired_surrogate_escapes_and_a_bom_are_fine(http, echo_gateway_url):
    body = b'\xef\xbb\xbf{"name": "\\ud83d\\ude00"}'
    status, answer = await post_raw(http, f"{echo_gateway_url}/v1/echo/j2:archive", body)
    assert status == 200 and answer["name"] == "\U0001F600"
