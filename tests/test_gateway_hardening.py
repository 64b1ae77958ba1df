"""The gateway's hardening, over real HTTP against the echo backend (fixtures_gateway.ECHO_PROTO): which methods are
routed at all, and what a caller gets wrong (bodies, headers, slow uploads) never ending in a 500."""

import asyncio
import json
import re

import pytest
import yarl
from multidict import CIMultiDict
from openapi_spec_validator import validate

from gateway.config import GatewayConfig
from gateway.transcode import Route
from tests.fixtures_gateway import ECHO_SERVICE, INTERNAL_SERVICE
from tests.test_gateway_transcoding import reason_of

HEALTH_SERVICE = "grpc.health.v1.Health"
FRESH_ID = re.compile(r"[0-9a-f]{32}")  # a request id the gateway made


@pytest.fixture(scope="module")
async def default_gateway_url(start_gateway, echo_server):
    """The echo backend behind a gateway with the default settings: no service's unannotated methods routed."""
    return await start_gateway({"echo": echo_server})


@pytest.fixture(scope="module")
async def listed_gateway_url(start_gateway, echo_server, echo_descriptor_set):
    """Every service of the echo backend in GATEWAY_UNBOUND_SERVICES, the internal one too."""
    return await start_gateway(
        {"echo": echo_server},
        descriptor_set=str(echo_descriptor_set),
        unbound_services=(ECHO_SERVICE, INTERNAL_SERVICE, HEALTH_SERVICE),
    )


def violations_of(status: dict) -> dict[str, str]:
    found = next((d for d in status["details"] if d["@type"].endswith("google.rpc.BadRequest")), {})
    return {v["field"]: v["description"] for v in found.get("field_violations", [])}


async def status_of(http, method: str, url: str) -> tuple[int, dict]:
    async with http.request(method, url, json={} if method == "POST" else None) as response:
        return response.status, await response.json()


async def post_raw(http, url: str, body: bytes) -> tuple[int, dict]:
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        assert response.headers["X-Request-Id"]
        return response.status, await response.json()


async def raw_exchange(base_url: str, request: bytes, timeout: float = 5.0) -> tuple[int, CIMultiDict, bytes]:
    """Sends bytes no HTTP client library would send; returns the status, headers and body of the answer."""
    url = yarl.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head.decode("latin-1").strip().split("\r\n")
        headers = CIMultiDict(line.split(": ", 1) for line in lines)
        body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), timeout)
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


# --- 1. unbound methods and internal services -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"/{ECHO_SERVICE}/Unannotated", f"/{HEALTH_SERVICE}/Check"])
async def test_unannotated_methods_are_routed_only_for_listed_services(
    http, default_gateway_url, listed_gateway_url, path
):
    status, body = await status_of(http, "POST", default_gateway_url + path)
    assert status == 404 and reason_of(body) == "ROUTE_NOT_FOUND"
    status, _ = await status_of(http, "POST", listed_gateway_url + path)
    assert status == 200


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/service-only/x"),  # annotated, CALLER_SERVICE only
        ("POST", f"/{ECHO_SERVICE}/UnannotatedServiceOnly"),  # listed service, CALLER_SERVICE only
        ("GET", "/v1/internal/ping"),  # annotated, in an internal service
        ("POST", f"/{INTERNAL_SERVICE}/Unannotated"),  # an internal service, even though listed
    ],
)
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
    monkeypatch.setenv("GATEWAY_UNBOUND_SERVICES", f" {ECHO_SERVICE}, {HEALTH_SERVICE} ,")
    assert GatewayConfig.from_env().unbound_services == (ECHO_SERVICE, HEALTH_SERVICE)


# --- 2. bodies that are JSON but not what the route takes -------------------------------------------------------------


@pytest.mark.parametrize(
    "body, kind",
    [(b"null", "null"), (b"1", "a number"), (b"true", "a boolean"), (b'"x"', "a string"), (b"[]", "an array")],
)
@pytest.mark.parametrize(
    "path, target",
    [
        ("/v1/echo/b1:archive", "the request message"),  # body: "*"
        ("/v1/echo/b1", "the request's nested field"),
    ],
)  # body: "nested"
async def test_a_body_that_is_not_an_object_is_400(http, echo_gateway_url, body, kind, path, target):
    status, answer = await post_raw(http, echo_gateway_url + path, body)
    assert status == 400 and answer["code"] == 3 and reason_of(answer) == "INVALID_BODY"
    assert violations_of(answer) == {"body": f"must be an object ({target}), got {kind}"}


@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, b"[" * 65 + b"]" * 65]
)
async def test_deeply_nested_json_is_400(http, default_gateway_url, body):
    status, answer = await post_raw(http, f"{default_gateway_url}/v1/echo/d1:archive", body)
    assert status == 400 and reason_of(answer) == "JSON_TOO_DEEP"
    assert "64" in violations_of(answer)["body"]


async def test_sixty_four_levels_are_within_the_bound(http, default_gateway_url):
    status, answer = await post_raw(http, f"{default_gateway_url}/v1/echo/d2:archive", b"[" * 64 + b"]" * 64)
    assert status == 400 and reason_of(answer) == "INVALID_BODY"  # deep enough to decode, but not an object


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"color": "\\ud800"}', "MALFORMED_JSON"),  # an unpaired surrogate where upb looks up an enum name
        (b'{"\\udfff": 1}', "MALFORMED_JSON"),  # ... or a field name
        (b'{"id": "\xed\xa0\x80"}', "MALFORMED_JSON"),  # a surrogate encoded as bytes: not UTF-8
        (b'{"id": "\xff"}', "MALFORMED_JSON"),
        (b'{"color": 1e999}', "INVALID_BODY"),  # infinity for an enum
        (b'{"size": 1e999}', "INVALID_BODY"),
        (b'{"labels": {"k": 1.5}}', "INVALID_BODY"),
    ],
)
async def test_other_json_misfits_are_400(http, echo_gateway_url, body, reason):
    status, answer = await post_raw(http, f"{echo_gateway_url}/v1/echo/j1:archive", body)
    assert status == 400 and reason_of(answer) == reason and "body" in violations_of(answer)


async def test_paired_surrogate_escapes_and_a_bom_are_fine(http, echo_gateway_url):
    body = b'\xef\xbb\xbf{"name": "\\ud83d\\ude00"}'
    status, answer = await post_raw(http, f"{echo_gateway_url}/v1/echo/j2:archive", body)
    assert status == 200 and answer["name"] == "\U0001f600"


# --- 3. headers gRPC metadata cannot carry ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Request-Id", "Authorization", "Grpc-Metadata-Tenant"])
@pytest.mark.parametrize("value", [b"caf\xc3\xa9", b"\xff\xfe", b"a\tb"], ids=["utf-8", "latin-1", "tab"])
async def test_a_header_that_is_not_printable_ascii_is_400(echo_gateway_url, header, value):
    request = b"GET /v1/echo/h1 HTTP/1.1\r\nHost: gateway\r\n" + header.encode() + b": " + value + b"\r\n\r\n"
    status, headers, body = await raw_exchange(echo_gateway_url, request)
    answer = json.loads(body)
    assert status == 400 and answer["code"] == 3 and reason_of(answer) == "INVALID_HEADER"
    assert list(violations_of(answer)) == [header] and "printable ASCII" in violations_of(answer)[header]
    assert FRESH_ID.fullmatch(headers["X-Request-Id"])


@pytest.mark.parametrize(
    "name, value, rule",
    [
        ("Grpc-Metadata-Trace-Bin", "café", "must be base64"),
        ("Grpc-Metadata-X-Request-Id", "other", "set by the gateway"),
        ("Grpc-Metadata-Authorization", "Bearer other", "set by the gateway"),
        ("Grpc-Metadata-X-Forwarded-For", "203.0.113.9", "set by the gateway"),
        ("Grpc-Metadata-Grpc-Status", "0", "not a usable metadata name"),
        ("Grpc-Timeout", "soon", "<digits><H|M|S|m|u|n>"),
    ],
)
async def test_other_header_refusals_name_the_header(http, echo_gateway_url, name, value, rule):
    async with http.get(f"{echo_gateway_url}/v1/echo/h2", headers={name: value}) as response:
        answer = await response.json()
    assert response.status == 400 and rule in violations_of(answer)[name]


@pytest.mark.parametrize("given", ["x" * 129, "two words", "<script>", "a;b"])
async def test_an_unusable_request_id_is_replaced(http, echo_gateway_url, given):
    async with http.get(f"{echo_gateway_url}/v1/echo/h3", headers={"X-Request-Id": given}) as response:
        assert (await response.json())["labels"]["x-request-id"] == response.headers["X-Request-Id"]
        assert FRESH_ID.fullmatch(response.headers["X-Request-Id"])


@pytest.mark.parametrize("given", ["x" * 128, "Ab9._:/=+-", "0f8fad5b-d9cb-469f-a165-70867728950e"])
async def test_a_plain_request_id_is_kept(http, echo_gateway_url, given):
    async with http.get(f"{echo_gateway_url}/v1/echo/h4", headers={"X-Request-Id": given}) as response:
        assert (await response.json())["labels"]["x-request-id"] == given == response.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "method, path, body, headers",
    [
        ("GET", "/v1/nowhere", None, {}),  # 404
        ("DELETE", "/v1/echo/x", None, {}),  # 405
        ("OPTIONS", "/v1/nowhere", None, {}),  # preflight of no route
        ("POST", "/v1/echo/x:archive", b"null", {}),  # 400 body
        ("GET", "/v1/echo/x", None, {"Grpc-Metadata-Bad-Bin": "%%"}),  # 400 header
        ("POST", "/v1/echo/x:archive", b'{"id": "' + b"x" * 70_000 + b'"}', {}),  # 413
        ("GET", "/v1/fail/INTERNAL", None, {}),  # a backend's 500
        ("GET", "/v1/wait?size=2000", None, {"Grpc-Timeout": "50m"}),  # 504
        ("GET", "/v1/count?size=0&id=NOT_FOUND", None, {}),  # a stream failing before its first message
    ],
)
async def test_every_error_answer_carries_the_request_id(http, echo_gateway_url, method, path, body, headers):
    async with http.request(
        method, echo_gateway_url + path, data=body, headers={**headers, "X-Request-Id": "every-1"}
    ) as response:
        assert response.status >= 400 and response.headers["X-Request-Id"] == "every-1"
        assert "code" in await response.json()


# --- 4. the client's address ------------------------------------------------------------------------------------------


async def test_the_client_address_goes_to_the_backend_as_x_forwarded_for(http, echo_gateway_url):
    async with http.get(f"{echo_gateway_url}/v1/echo/f1", headers={"X-Forwarded-For": "203.0.113.9"}) as response:
        labels = (await response.json())["labels"]
    assert labels["x-forwarded-for"] == "127.0.0.1"  # the TCP peer; what the client claimed is not passed on


async def test_a_path_with_an_encoded_newline_is_routed_like_any_other(http, echo_gateway_url):
    """Found by tests/test_fuzz_gateway.py: aiohttp's own route did not match %0A, and its 404 became a 500."""
    async with http.get(yarl.URL(f"{echo_gateway_url}/v1/echo/a%0Ab", encoded=True)) as response:
        assert response.status == 200 and (await response.json())["id"] == "a\nb"
    async with http.get(yarl.URL(f"{echo_gateway_url}/v1/nowhere%0A", encoded=True)) as response:
        assert response.status == 404 and reason_of(await response.json()) == "ROUTE_NOT_FOUND"


# --- 5. a body that never finishes arriving ---------------------------------------------------------------------------


async def test_a_stalled_body_is_408_after_the_body_timeout(start_gateway, echo_server):
    url = await start_gateway({"echo": echo_server}, body_timeout_seconds=1)
    request = (
        b"POST /v1/echo/s1:archive HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"name": "'
    )  # 10 of the 100 bytes, then nothing
    started = asyncio.get_running_loop().time()
    status, headers, body = await raw_exchange(url, request)
    waited = asyncio.get_running_loop().time() - started
    answer = json.loads(body)
    assert status == 408 and answer["code"] == 4 and reason_of(answer) == "BODY_TIMEOUT"  # DEADLINE_EXCEEDED
    assert 0.9 < waited < 4 and headers["Connection"] == "close" and FRESH_ID.fullmatch(headers["X-Request-Id"])


def test_body_timeout_setting(monkeypatch):
    monkeypatch.delenv("GATEWAY_BODY_TIMEOUT_SECONDS", raising=False)
    assert GatewayConfig.from_env().body_timeout_seconds == 30
    monkeypatch.setenv("GATEWAY_BODY_TIMEOUT_SECONDS", "2.5")
    assert GatewayConfig.from_env().body_timeout_seconds == 2.5


# --- 6. a fault in the gateway itself ---------------------------------------------------------------------------------


def _fail(*args, **kwargs):
    raise RuntimeError("a secret detail of the fault")


def internal_details(answer: dict, request_id: str) -> None:
    assert answer["code"] == 13 and reason_of(answer) == "INTERNAL" and "secret" not in json.dumps(answer)
    assert request_id in answer["message"]
    assert {"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": request_id} in answer["details"]


@pytest.mark.parametrize(
    "target, path",
    [("gateway.transcode.Route.to_json", "/v1/echo/i1"), ("gateway.openapi.OpenApiBuilder.document", "/openapi.json")],
)
async def test_an_unexpected_exception_is_a_500_status_with_the_request_id(
    http, echo_gateway_url, monkeypatch, target, path
):
    monkeypatch.setattr(target, _fail)
    async with http.get(echo_gateway_url + path, headers={"X-Request-Id": "fault-1"}) as response:
        assert response.status == 500 and response.headers["Content-Type"] == "application/json"
        assert response.headers["X-Request-Id"] == "fault-1"
        internal_details(await response.json(), "fault-1")


async def test_an_unexpected_exception_mid_stream_is_the_last_line(http, echo_gateway_url, monkeypatch):
    calls = []

    def to_json_once(self, message):
        calls.append(message)
        return {"id": message.id} if len(calls) == 1 else _fail()

    monkeypatch.setattr(Route, "to_json", to_json_once)
    async with http.get(f"{echo_gateway_url}/v1/count?size=3", headers={"X-Request-Id": "fault-2"}) as response:
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert response.status == 200 and lines[0] == {"id": "0"} and len(lines) == 2
    internal_details(lines[1]["error"], "fault-2")
