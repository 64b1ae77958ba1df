"""The auth service's REST paths through a gateway over real HTTP, against the real in-process auth server."""

import uuid

from tests.test_gateway_transcoding import reason_of


def new_email() -> str:
    return f"web-{uuid.uuid4().hex[:10]}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(http, url, document=None, **kwargs):
    async with http.post(url, json=document, **kwargs) as response:
        return response.status, await response.json()


async def get(http, url, **kwargs):
    async with http.get(url, **kwargs) as response:
        return response.status, await response.json()


async def register(http, gateway_url, email=None, password="correct-horse"):
    status, session = await post(
        http,
        f"{gateway_url}/api/v1/auth/register",
        {"email": email or new_email(), "password": password, "name": "Web User"},
    )
    assert status == 200, session
    return session


async def test_register_login_me(http, gateway_url):
    email = new_email()
    registered = await register(http, gateway_url, email)
    status, session = await post(
        http, f"{gateway_url}/api/v1/auth/login", {"email": email, "password": "correct-horse"}
    )
    assert status == 200
    assert session["token_type"] == "bearer" and session["access_token"]
    assert session["user"]["email"] == email and session["user"]["role"] == "USER"
    assert session["user"]["id"] == registered["user"]["id"]

    status, me = await get(http, f"{gateway_url}/api/v1/auth/me", headers=bearer(session["access_token"]))
    assert status == 200 and me["id"] == session["user"]["id"] and me["name"] == "Web User"


async def test_no_token_is_401(http, gateway_url):
    status, body = await get(http, f"{gateway_url}/api/v1/auth/me")
    assert status == 401 and reason_of(body) == "MISSING_TOKEN"


async def test_user_on_an_admin_path_is_403(http, gateway_url):
    session = await register(http, gateway_url)
    status, body = await get(http, f"{gateway_url}/api/v1/auth/admin/users", headers=bearer(session["access_token"]))
    assert status == 403 and body["code"] == 7


async def test_admin_lists_users_and_unknown_email_is_404(http, gateway_url, admin_session):
    admin = bearer(admin_session.access_token)
    status, listed = await get(http, f"{gateway_url}/api/v1/auth/admin/users?page_size=2", headers=admin)
    assert status == 200 and len(listed["users"]) <= 2 and "next_page_token" in listed

    status, body = await get(
        http, f"{gateway_url}/api/v1/users/search/by-email?email=unknown@example.com", headers=admin
    )
    assert status == 404 and body["code"] == 5
    assert reason_of(body) == "USER_NOT_FOUND"
    assert any(d["@type"].endswith("google.rpc.ResourceInfo") for d in body["details"])

    status, found = await get(
        http, f"{gateway_url}/api/v1/users/search/by-email?email={admin_session.user.email}", headers=admin
    )
    assert status == 200 and found["id"] == admin_session.user.id
    status, by_id = await get(http, f"{gateway_url}/api/v1/users/{admin_session.user.id}", headers=admin)
    assert status == 200 and by_id["email"] == admin_session.user.email


async def test_internal_batch_lookup_is_not_routed_even_when_its_service_is_listed(
    http, start_gateway, auth_server, admin_session
):
    listed = await start_gateway({"auth": auth_server}, unbound_services=("coupons.auth.v1.AuthInternalService",))
    for base in (listed, await start_gateway({"auth": auth_server})):
        status, body = await post(
            http,
            f"{base}/coupons.auth.v1.AuthInternalService/BatchLookupUsers",
            {"emails": [admin_session.user.email]},
            headers=bearer(admin_session.access_token),
        )
        assert status == 404 and reason_of(body) == "ROUTE_NOT_FOUND"


async def test_bad_email_is_400_with_field_violations(http, gateway_url):
    status, body = await post(
        http, f"{gateway_url}/api/v1/auth/register", {"email": "not-an-email", "password": "correct-horse"}
    )
    assert status == 400 and body["code"] == 3
    bad_request = next(d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert bad_request["field_violations"][0]["field"] == "email"


async def test_same_email_twice_is_409(http, gateway_url):
    email = new_email()
    await register(http, gateway_url, email)
    status, body = await post(http, f"{gateway_url}/api/v1/auth/register", {"email": email, "password": "another-pw1"})
    assert status == 409 and reason_of(body) == "EMAIL_TAKEN"


async def test_repeated_failed_logins_are_429(http, gateway_url):
    email = new_email()
    await register(http, gateway_url, email)
    statuses = []
    for _ in range(5):
        status, body = await post(http, f"{gateway_url}/api/v1/auth/login", {"email": email, "password": "wrong-pw-1"})
        statuses.append(status)
    assert statuses == [401, 401, 401, 401, 429]
    assert reason_of(body) == "LOGIN_RATE_LIMITED"
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in body["details"])


async def test_malformed_json_and_unknown_route(http, gateway_url):
    async with http.post(f"{gateway_url}/api/v1/auth/login", data=b'{"email": ') as response:
        assert response.status == 400 and reason_of(await response.json()) == "MALFORMED_JSON"
    status, body = await get(http, f"{gateway_url}/api/v1/nothing-here")
    assert status == 404 and reason_of(body) == "ROUTE_NOT_FOUND"


async def test_request_id_and_timeout_headers(http, gateway_url):
    status, _ = await get(
        http, f"{gateway_url}/api/v1/auth/jwks", headers={"X-Request-Id": "web-req-1", "Grpc-Timeout": "5S"}
    )
    async with http.get(f"{gateway_url}/.well-known/jwks.json", headers={"X-Request-Id": "web-req-2"}) as response:
        keys = await response.json()
        assert response.headers["X-Request-Id"] == "web-req-2"
    assert status == 200 and keys["keys"][0]["kty"] == "OKP"
