"""Transcoding over real HTTP and real gRPC against the test-only echo backend (fixtures_gateway.ECHO_PROTO):
binding, verbs, response_body, NDJSON streaming, every status code, headers, CORS and limits."""

import json

import grpc
import pytest

from tests.test_gateway_routing import EXPECTED_HTTP


async def get_json(http, url, **kwargs):
    async with http.get(url, **kwargs) as response:
        return response.status, await response.json()


def reason_of(status: dict) -> str:
    return next(d["reason"] for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))


async def test_path_query_and_snake_case_output(http, echo_gateway_url):
    status, body = await get_json(
        http, f"{echo_gateway_url}/v1/echo/a%20b?size=2&color=RED&tags=x&tags=y&nested.amount=9007199254740993"
    )
    assert status == 200
    assert body["id"] == "a b" and body["size"] == 2 and body["color"] == "RED" and body["tags"] == ["x", "y"]
    assert body["nested"]["amount"] == "9007199254740993"  # int64 as a string, canonically
    assert body["flag"] is False and body["name"] == ""  # fields without presence are always printed
    assert "note" not in body and "since" not in body  # unset optional and message fields are not


async def test_body_field_binding_accepts_camel_and_snake(http, echo_gateway_url):
    async with http.post(f"{echo_gateway_url}/v1/echo/e1?size=1", json={"amount": "3", "tags": ["t"]}) as response:
        body = await response.json()
    assert response.status == 200 and body["nested"] == {"id": "", "amount": "3", "tags": ["t"]}
    async with http.post(f"{echo_gateway_url}/v1/echo/e1:archive", json={"colors": ["GREEN"], "size": 4}) as response:
        camel = await response.json()
    async with http.patch(f"{echo_gateway_url}/v1/nested/n7", json={"amount": 5}) as response:
        nested = await response.json()
    assert camel["colors"] == ["GREEN"] and camel["size"] == 4 and camel["id"] == "e1"
    assert nested["nested"]["id"] == "n7" and nested["nested"]["amount"] == "5"


async def test_multi_segment_variables(http, echo_gateway_url):
    _, shelf = await get_json(http, f"{echo_gateway_url}/v1/shelves/s1/books/b%2F1")
    _, file = await get_json(http, f"{echo_gateway_url}/v1/files/a/b/c.txt")
    assert shelf["name"] == "shelves/s1/books/b%2F1" and file["path"] == "a/b/c.txt"


async def test_response_body(http, echo_gateway_url):
    status, body = await get_json(http, f"{echo_gateway_url}/v1/echo/e2/nested?nested.amount=4")
    assert status == 200 and body == {"id": "", "amount": "4", "tags": []}


async def test_unannotated_method_takes_the_whole_body(http, echo_gateway_url):
    async with http.post(
        f"{echo_gateway_url}/gatewaytest.v1.EchoService/Unannotated", json={"id": "u1", "nested": {"id": "n"}}
    ) as response:
        body = await response.json()
    assert response.status == 200 and body["id"] == "u1" and body["nested"]["id"] == "n"


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK], ids=lambda c: c.name)
async def test_every_status_code_end_to_end(http, echo_gateway_url, code):
    status, body = await get_json(http, f"{echo_gateway_url}/v1/fail/{code.name}")
    assert status == EXPECTED_HTTP[code.name]
    assert body["code"] == code.value[0] and body["message"] == f"failing with {code.name} as asked"
    assert reason_of(body) == f"TEST_{code.name}"


async def test_server_streaming_as_ndjson(http, echo_gateway_url):
    async with http.get(f"{echo_gateway_url}/v1/count?size=3") as response:
        lines = (await response.text()).splitlines()
    assert response.status == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line)["id"] for line in lines] == ["0", "1", "2"]


async def test_error_mid_stream_is_the_last_line(http, echo_gateway_url):
    async with http.get(f"{echo_gateway_url}/v1/count?size=2&id=ABORTED") as response:
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert response.status == 200 and [line.get("id") for line in lines[:2]] == ["0", "1"]
    assert lines[2]["error"]["code"] == grpc.StatusCode.ABORTED.value[0]
    assert reason_of(lines[2]["error"]) == "TEST_ABORTED"


async def test_error_before_the_first_message_keeps_its_status(http, echo_gateway_url):
    status, body = await get_json(http, f"{echo_gateway_url}/v1/count?size=0&id=NOT_FOUND")
    assert status == 404 and reason_of(body) == "TEST_NOT_FOUND"


async def test_health_watch_streams_through_the_unannotated_route(http, echo_gateway_url):
    async with http.post(f"{echo_gateway_url}/grpc.health.v1.Health/Watch", json={"service": ""}) as response:
        first = json.loads(await response.content.readline())
    assert response.status == 200 and first == {"status": "SERVING"}


async def test_metadata_headers_are_forwarded(http, echo_gateway_url):
    headers = {"Authorization": "Bearer t0k3n", "Grpc-Metadata-Tenant": "acme", "X-Request-Id": "req-123"}
    async with http.get(f"{echo_gateway_url}/v1/echo/m1", headers=headers) as response:
        labels = (await response.json())["labels"]
    assert labels["authorization"] == "Bearer t0k3n" and labels["tenant"] == "acme"
    assert labels["x-request-id"] == "req-123" and response.headers["X-Request-Id"] == "req-123"


async def test_a_request_id_is_made_when_absent(http, echo_gateway_url):
    async with http.get(f"{echo_gateway_url}/v1/echo/m2") as response:
        made = response.headers["X-Request-Id"]
        assert (await response.json())["labels"]["x-request-id"] == made and len(made) == 32


async def test_grpc_timeout_is_honoured(http, echo_gateway_url):
    status, body = await get_json(http, f"{echo_gateway_url}/v1/wait?size=2000", headers={"Grpc-Timeout": "100m"})
    assert status == 504 and body["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    status, _ = await get_json(http, f"{echo_gateway_url}/v1/wait?size=10", headers={"Grpc-Timeout": "5S"})
    assert status == 200
    status, body = await get_json(http, f"{echo_gateway_url}/v1/wait", headers={"Grpc-Timeout": "soon"})
    assert status == 400 and reason_of(body) == "INVALID_TIMEOUT"


async def test_default_deadline(http, start_gateway, echo_server):
    url = await start_gateway({"echo": echo_server}, default_timeout_seconds=0.1)
    status, _ = await get_json(http, f"{url}/v1/wait?size=2000")
    assert status == 504


async def test_gateway_errors_share_the_status_shape(http, echo_gateway_url):
    status, body = await get_json(http, f"{echo_gateway_url}/v1/nowhere")
    assert status == 404 and body["code"] == 5 and reason_of(body) == "ROUTE_NOT_FOUND"
    async with http.delete(f"{echo_gateway_url}/v1/echo/x") as response:
        assert response.status == 405 and reason_of(await response.json()) == "METHOD_NOT_ALLOWED"
        assert response.headers["Allow"] == "GET, POST"
    async with http.post(
        f"{echo_gateway_url}/v1/echo/x:archive", data=b"{oops", headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400 and reason_of(await response.json()) == "MALFORMED_JSON"
    status, body = await get_json(http, f"{echo_gateway_url}/v1/echo/x?bogus=1")
    assert status == 400 and reason_of(body) == "UNKNOWN_QUERY_PARAMETER"
    assert body["details"][1]["field_violations"][0]["field"] == "bogus"


async def test_body_size_limit(http, echo_gateway_url):
    big = json.dumps({"id": "x" * (70 * 1024)})
    async with http.post(f"{echo_gateway_url}/v1/echo/x:archive", data=big) as response:
        body = await response.json()
    assert response.status == 413 and reason_of(body) == "BODY_TOO_LARGE"


async def test_cors_preflight_and_headers(http, echo_gateway_url):
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(f"{echo_gateway_url}/v1/echo/x", headers=preflight) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert response.headers["Access-Control-Allow-Methods"] == "GET, POST"
        assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    async with http.get(f"{echo_gateway_url}/v1/echo/x", headers={"Origin": "https://app.example"}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "X-Request-Id" in response.headers["Access-Control-Expose-Headers"]
    async with http.options(
        f"{echo_gateway_url}/v1/echo/x", headers={**preflight, "Origin": "https://evil.example"}
    ) as response:
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_any_origin(http, start_gateway, echo_server):
    url = await start_gateway({"echo": echo_server}, cors_origins=("*",))
    async with http.get(f"{url}/v1/echo/x", headers={"Origin": "https://anywhere.example"}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_healthz(http, echo_gateway_url, start_gateway, echo_server):
    status, body = await get_json(http, f"{echo_gateway_url}/healthz")
    assert status == 200 and body["backends"]["echo"]["status"] == "SERVING"
    url = await start_gateway({"echo": echo_server, "gone": "127.0.0.1:1"})
    status, body = await get_json(http, f"{url}/healthz")
    assert status == 503 and body["backends"]["gone"]["status"].startswith("UNREACHABLE")
    # The backend that answers is still routed.
    status, _ = await get_json(http, f"{url}/v1/echo/x")
    assert status == 200
