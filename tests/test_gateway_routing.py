"""Path templates, route matching, request binding and the status table, in the style of grpc-gateway's
pattern and query tests: no server, tables of inputs and expected outcomes."""

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import code_pb2, error_details_pb2
from multidict import MultiDict

from gateway import templates
from gateway.binding import RequestBinder
from gateway.errors import GatewayError, http_status
from gateway.routes import ConflictError, Router
from tests.fixtures_gateway import pool_of

# --- templates ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, segments, verb, variables",
    [
        ("/v1/books", ["v1", "books"], "", []),
        ("/v1/books/{id}", ["v1", "books", "*"], "", [("id", 2, 3)]),
        ("/v1/{name=shelves/*/books/*}", ["v1", "shelves", "*", "books", "*"], "", [("name", 1, 5)]),
        ("/v1/files/{path=**}", ["v1", "files", "**"], "", [("path", 2, None)]),
        ("/v1/books/{book.id}", ["v1", "books", "*"], "", [("book.id", 2, 3)]),
        ("/v1/books/{id}:archive", ["v1", "books", "*"], "archive", [("id", 2, 3)]),
        ("/v1/{name=books/*}:undelete", ["v1", "books", "*"], "undelete", [("name", 1, 3)]),
        ("/v1/me:changePassword", ["v1", "me"], "changePassword", []),
        ("/v1/*/items/**", ["v1", "*", "items", "**"], "", []),
    ],
)
def test_template_parse(text, segments, verb, variables):
    parsed = templates.parse(text)
    assert [s.value or s.kind for s in parsed.segments] == segments
    assert parsed.verb == verb
    assert [(v.name, v.start, v.end) for v in parsed.variables] == variables


@pytest.mark.parametrize(
    "text",
    [
        "v1/books",
        "/v1/{id",
        "/v1/id}",
        "/v1/**/books",
        "/v1/{a}/{a}",
        "/v1/{1bad}",
        "/v1/a:b:c",
        "/v1//x",
        "/v1/{name=books/{id}}",
    ],
)
def test_template_parse_refuses(text):
    with pytest.raises(templates.TemplateError):
        templates.parse(text)


def test_openapi_path_of_template():
    assert templates.parse("/v1/{name=shelves/*/books/*}:get").openapi_path() == "/v1/{name}:get"
    assert templates.parse("/v1/books/{book.id}/codes").openapi_path() == "/v1/books/{book.id}/codes"


# --- matching ----------------------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/v1/users/{id}", "GetUser"),
    ("PATCH", "/api/v1/users/{id}", "UpdateUser"),
    ("GET", "/api/v1/users/search/by-email", "LookupUserByEmail"),
    ("GET", "/api/v1/users/{user_id}/coupons", "ListUserCoupons"),
    ("POST", "/api/v1/books/{id}:archive", "ArchiveBook"),
    ("GET", "/api/v1/books/{id}", "GetBook"),
    ("POST", "/api/v1/coupons/assign", "AssignRandom"),
    ("POST", "/api/v1/coupons/assign/{code}", "Assign"),
    ("GET", "/api/v1/coupons/{code}", "GetCoupon"),
    ("GET", "/v1/{name=shelves/*/books/*}", "GetShelfBook"),
    ("GET", "/v1/files/{path=**}", "GetFile"),
    ("GET", "/v1/files/special", "GetSpecialFile"),
    ("POST", "/api/v1/auth/me:changePassword", "ChangePassword"),
    ("GET", "/api/v1/auth/me", "GetMe"),
]


@pytest.fixture(scope="module")
def router():
    built = Router()
    for method, path, name in ROUTES:
        built.add(method, templates.parse(path), name)
    return built


@pytest.mark.parametrize(
    "method, path, target, variables",
    [
        ("GET", "/api/v1/users/42", "GetUser", {"id": "42"}),
        ("PATCH", "/api/v1/users/42", "UpdateUser", {"id": "42"}),
        # A literal beats a variable at the same position...
        ("GET", "/api/v1/users/search/by-email", "LookupUserByEmail", {}),
        # ...but a path that only fits the variable still binds it.
        ("GET", "/api/v1/users/me/coupons", "ListUserCoupons", {"user_id": "me"}),
        ("GET", "/api/v1/users/search/coupons", "ListUserCoupons", {"user_id": "search"}),
        ("POST", "/api/v1/books/b1:archive", "ArchiveBook", {"id": "b1"}),
        ("GET", "/api/v1/books/b1", "GetBook", {"id": "b1"}),
        # A colon in the last segment is part of the value when no verb route fits.
        ("GET", "/api/v1/coupons/AB:CD", "GetCoupon", {"code": "AB:CD"}),
        ("POST", "/api/v1/coupons/assign", "AssignRandom", {}),
        ("POST", "/api/v1/coupons/assign/SUMMER-10", "Assign", {"code": "SUMMER-10"}),
        # Per method: GET on the literal path of a POST route falls to the GET variable route.
        ("GET", "/api/v1/coupons/assign", "GetCoupon", {"code": "assign"}),
        # Percent-decoding: a single segment decodes fully, %2F included.
        ("GET", "/api/v1/coupons/A%2FB%20C", "GetCoupon", {"code": "A/B C"}),
        ("GET", "/api/v1/users/caf%C3%A9", "GetUser", {"id": "café"}),
        # Multi-segment variables keep an encoded slash encoded (RFC 6570 reserved expansion).
        ("GET", "/v1/shelves/s1/books/b1", "GetShelfBook", {"name": "shelves/s1/books/b1"}),
        ("GET", "/v1/shelves/s%201/books/b%2F1", "GetShelfBook", {"name": "shelves/s 1/books/b%2F1"}),
        ("GET", "/v1/files/a/b/c.txt", "GetFile", {"path": "a/b/c.txt"}),
        ("GET", "/v1/files", "GetFile", {"path": ""}),
        ("GET", "/v1/files/special", "GetSpecialFile", {}),
        ("POST", "/api/v1/auth/me:changePassword", "ChangePassword", {}),
        ("GET", "/api/v1/auth/me", "GetMe", {}),
    ],
)
def test_match(router, method, path, target, variables):
    found = router.match(method, path)
    assert found is not None, f"{method} {path} did not match"
    assert found.target == target
    assert {".".join(k): v for k, v in found.variables().items()} == variables


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/users/"),
        ("GET", "/api/v1/users/1/2"),
        ("GET", "/v1/shelves/s1/books"),
        ("GET", "/v1/shelves/s1/books/b1/extra"),
        ("POST", "/api/v1/books/b1:unarchive"),
        ("DELETE", "/api/v1/users/42"),
        ("GET", "/nothing"),
    ],
)
def test_no_match(router, method, path):
    assert router.match(method, path) is None


def test_allowed_methods(router):
    assert router.allowed_methods("/api/v1/users/42") == ["GET", "PATCH"]
    assert router.allowed_methods("/nothing") == []


def test_same_shape_twice_conflicts(router):
    with pytest.raises(ConflictError):
        router.add("GET", templates.parse("/api/v1/users/{other}"), "Other")
    router.add("GET", templates.parse("/api/v1/users/{other}:verb"), "WithVerb")  # a verb makes it distinct


# --- binding -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_request(echo_descriptor_set):
    pool = pool_of(echo_descriptor_set)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("gatewaytest.v1.EchoRequest"))


def bad_request(error: GatewayError) -> dict[str, str]:
    assert error.status.code == code_pb2.INVALID_ARGUMENT and error.http == 400
    for packed in error.status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            detail = error_details_pb2.BadRequest()
            packed.Unpack(detail)
            return {v.field: v.description for v in detail.field_violations}
    return {}


def test_query_parameters(echo_request):
    binder = RequestBinder(echo_request, [("id",)], "")
    query = MultiDict(
        [
            ("size", "5"),
            ("flag", "true"),
            ("color", "GREEN"),
            ("tags", "a"),
            ("tags", "b"),
            ("colors", "RED"),
            ("colors", "2"),
            ("nested.amount", "12345678901"),
            ("nested.tags", "x"),
            ("since", "2024-01-02T03:04:05Z"),
        ]
    )
    message = binder.bind(b"", query, {("id",): "abc"})
    assert message.id == "abc" and message.size == 5 and message.flag
    assert message.color == 2 and list(message.tags) == ["a", "b"] and list(message.colors) == [1, 2]
    assert message.nested.amount == 12345678901 and list(message.nested.tags) == ["x"]
    assert message.since.seconds == 1704164645


def test_query_accepts_json_names_and_proto_names(echo_descriptor_set):
    pool = pool_of(echo_descriptor_set)
    request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.api.HttpRule"))
    binder = RequestBinder(request_class, [], "")
    assert binder.bind(b"", MultiDict(response_body="a"), {}).response_body == "a"
    assert binder.bind(b"", MultiDict(responseBody="b"), {}).response_body == "b"
    assert binder.bind(b"", MultiDict([("custom.kind", "HEAD")]), {}).custom.kind == "HEAD"


@pytest.mark.parametrize(
    "query, field",
    [
        ([("unknown", "1")], "unknown"),
        ([("nested.unknown", "1")], "nested.unknown"),
        ([("id", "x")], "id"),  # bound by the path
        ([("nested", "x")], "nested"),  # a message, not a value
        ([("labels", "x")], "labels"),  # maps are not query-bindable
        ([("size", "1"), ("size", "2")], "size"),  # not repeated
        ([("flag", "maybe")], "flag"),
    ],
)
def test_query_refusals(echo_request, query, field):
    binder = RequestBinder(echo_request, [("id",)], "")
    with pytest.raises(GatewayError) as caught:
        binder.bind(b"", MultiDict(query), {("id",): "abc"})
    assert field in bad_request(caught.value)


@pytest.mark.parametrize("query", [[("size", "many")], [("color", "PURPLE")]])
def test_query_values_of_the_wrong_type(echo_request, query):
    with pytest.raises(GatewayError) as caught:
        RequestBinder(echo_request, [], "").bind(b"", MultiDict(query), {})
    assert bad_request(caught.value)


def test_body_star_takes_everything_and_refuses_query(echo_request):
    binder = RequestBinder(echo_request, [("id",)], "*")
    message = binder.bind(b'{"id": "from-body", "size": 3}', MultiDict(), {("id",): "from-path"})
    assert message.id == "from-path" and message.size == 3  # the path wins over the body
    with pytest.raises(GatewayError):
        binder.bind(b"{}", MultiDict(size="1"), {("id",): "x"})


def test_body_field_with_path_inside_it(echo_request):
    binder = RequestBinder(echo_request, [("nested", "id")], "nested")
    message = binder.bind(b'{"amount": "7", "tags": ["t"]}', MultiDict(size="2"), {("nested", "id"): "n1"})
    assert message.nested.id == "n1" and message.nested.amount == 7 and message.size == 2
    with pytest.raises(GatewayError):  # the body field is not also a query parameter
        binder.bind(b"{}", MultiDict([("nested.amount", "1")]), {("nested", "id"): "n1"})


@pytest.mark.parametrize(
    "body, reason",
    [(b"{not json", "MALFORMED_JSON"), (b'{"size": "big"}', "INVALID_BODY"), (b'{"nope": 1}', "INVALID_BODY")],
)
def test_body_refusals(echo_request, body, reason):
    with pytest.raises(GatewayError) as caught:
        RequestBinder(echo_request, [], "*").bind(body, MultiDict(), {})
    info = error_details_pb2.ErrorInfo()
    caught.value.status.details[0].Unpack(info)
    assert caught.value.http == 400 and info.reason == reason


def test_path_value_of_the_wrong_type(echo_request):
    with pytest.raises(GatewayError):
        RequestBinder(echo_request, [("size",)], "").bind(b"", MultiDict(), {("size",): "ten"})


def test_path_field_must_exist(echo_request):
    with pytest.raises(KeyError):
        RequestBinder(echo_request, [("missing",)], "")


# --- status table ------------------------------------------------------------------------------------------------

EXPECTED_HTTP = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_status_table_covers_every_code(code):
    assert http_status(code) == EXPECTED_HTTP[code.name]
    assert http_status(code.value[0]) == EXPECTED_HTTP[code.name]


def test_namespaces_are_first_segments_the_api_owns_outright():
    """`/users/{user_id}/coupons` (the original's short path) leaves `/users` to a page of the static site;
    `/coupons` (a route of one segment) and `/api/v1/...` (a literal second segment) are the API's."""
    built = Router()
    for method, path in [
        ("GET", "/api/v1/books"),
        ("POST", "/coupons"),
        ("POST", "/coupons/lock/{code}"),
        ("GET", "/users/{user_id}/coupons"),
        ("GET", "/v1/files/{path=**}"),
    ]:
        built.add(method, templates.parse(path), path)
    assert built.namespaces() == {"api", "coupons", "v1"}
    assert built.match("GET", "/users/me/coupons") is not None and built.match("GET", "/users") is None
