"""The original service's showcase, end to end over real HTTP through the gateway to the running suite."""

import asyncio

import aiohttp
import pytest


def _reason(body: dict) -> str:
    return next((d["reason"] for d in body.get("details", []) if d["@type"].endswith("ErrorInfo")), "")


@pytest.fixture(scope="module")
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str = ""):
        self.http, self.base, self.token = http, base, token

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: dict | None = None) -> dict:
        status, payload = await self.call(method, path, body)
        assert status == 200, f"{method} {path}: {status} {payload}"
        return payload


async def _signed_in(http, base, email, password) -> Api:
    session = await Api(http, base).ok("POST", "/api/v1/auth/login", {"email": email, "password": password})
    assert session["token_type"] == "bearer" and session["user"]["email"] == email
    return Api(http, base, session["access_token"])


@pytest.fixture(scope="module")
async def admin(http, gateway_base) -> Api:
    return await _signed_in(http, gateway_base, "admin@example.com", "admin123")


async def _book(admin: Api, name: str) -> dict:
    listing = await admin.ok("GET", f"/api/v1/books?name_contains={name.replace(' ', '%20')}")
    return next(b for b in listing["books"] if b["name"] == name)


async def _fresh_coupon(admin: Api, email: str, book_name: str = "Summer Sale 2026") -> dict:
    user = await admin.ok("GET", f"/api/v1/users/search/by-email?email={email}")
    book = await _book(admin, book_name)
    return await admin.ok("POST", "/api/v1/coupons/assign", {"book_id": book["id"], "user_id": user["id"]})


async def test_alice_lists_and_redeems_her_coupons(http, gateway_base):
    alice = await _signed_in(http, gateway_base, "alice@example.com", "demo123")
    mine = await alice.ok("GET", "/api/v1/users/me/coupons?state=ASSIGNED")
    assert mine["coupons"] and all(c["state"] == "ASSIGNED" for c in mine["coupons"])
    summer = next(c for c in mine["coupons"] if c["code"].startswith("SUMMER-"))

    redeemed = await alice.ok("POST", f"/api/v1/coupons/redeem/{summer['code']}")
    assert redeemed["coupon"]["state"] == "REDEEMED"

    status, body = await alice.call("POST", f"/api/v1/coupons/redeem/{summer['code']}")
    assert (status, _reason(body)) == (400, "COUPON_ALREADY_REDEEMED")
    assert "REDEEMED" in body["message"]


async def test_lock_then_redeem_needs_the_lock_id_or_an_unlock(http, gateway_base):
    alice = await _signed_in(http, gateway_base, "alice@example.com", "demo123")
    mine = await alice.ok("GET", "/api/v1/users/me/coupons?state=ASSIGNED")
    code = mine["coupons"][0]["code"]

    locked = await alice.ok("POST", f"/api/v1/coupons/lock/{code}")
    assert locked["lock_id"] and locked["coupon"]["state"] == "LOCKED"

    status, body = await alice.call("POST", f"/api/v1/coupons/redeem/{code}")
    assert (status, _reason(body)) == (400, "COUPON_LOCKED")
    assert "locked until" in body["message"]

    unlocked = await alice.ok("POST", f"/api/v1/coupons/unlock/{code}")
    assert unlocked["state"] == "ASSIGNED"
    redeemed = await alice.ok("POST", f"/api/v1/coupons/redeem/{code}")
    assert redeemed["coupon"]["redemption_count"] == 1


async def test_lock_and_redeem_with_the_lock_id(http, gateway_base, admin):
    coupon = await _fresh_coupon(admin, "eve@example.com")
    eve = await _signed_in(http, gateway_base, "eve@example.com", "demo123")
    locked = await eve.ok("POST", f"/coupons/lock/{coupon['code']}")
    redeemed = await eve.ok("POST", f"/coupons/redeem/{coupon['code']}", {"lock_id": locked["lock_id"]})
    assert redeemed["coupon"]["state"] == "REDEEMED"
    listed = await eve.ok("GET", "/users/me/coupons")  # the original's seventh short path
    assert coupon["code"] in {c["code"] for c in listed["coupons"]}
    history = await admin.ok("GET", f"/api/v1/coupons/{coupon['code']}/history")
    assert [e["event"] for e in history["entries"]] == ["ASSIGNED_EVENT", "LOCKED_EVENT", "REDEEMED_EVENT"]


async def test_admin_assignment_beyond_the_per_user_limit_is_refused_with_the_numbers(admin):
    book = await _book(admin, "Summer Sale 2026")
    limit = book["max_assignments_per_user"]
    charlie = await admin.ok("GET", "/api/v1/users/search/by-email?email=charlie@example.com")
    held = await admin.ok("GET", f"/api/v1/users/{charlie['id']}/coupons?book_id={book['id']}")
    for _ in range(limit - len(held["coupons"])):
        await admin.ok("POST", "/api/v1/coupons/assign", {"book_id": book["id"], "user_id": charlie["id"]})
    status, body = await admin.call("POST", "/api/v1/coupons/assign", {"book_id": book["id"], "user_id": charlie["id"]})
    assert (status, _reason(body)) == (400, "ASSIGNMENT_LIMIT_REACHED")
    assert f"{limit}" in body["message"]


async def test_preview_and_run_a_distribution_to_beta_testers(admin):
    pools = await admin.ok("GET", "/api/v1/pools")
    pool = next(p for p in pools["pools"] if p["name"] == "Beta Testers")
    book = await _book(admin, "VIP Rewards")
    request = {"book_id": book["id"], "mode": "EQUAL", "codes_per_member": 1}
    plan = await admin.ok("POST", f"/api/v1/pools/{pool['id']}/distribute:preview", request)
    assert plan["satisfiable"] and plan["member_count"] == int(pool["member_count"])
    before = await admin.ok("GET", f"/api/v1/books/{book['id']}/stats")

    distribution = await admin.ok("POST", f"/api/v1/pools/{pool['id']}/distribute", request)
    assert int(distribution["assigned"]) == plan["member_count"]
    after = await admin.ok("GET", f"/api/v1/books/{book['id']}/stats")
    assert int(after["assigned"]) == int(before["assigned"]) + plan["member_count"]


async def test_two_parallel_redeems_of_one_code(http, gateway_base, admin):
    coupon = await _fresh_coupon(admin, "diana@example.com")
    diana = await _signed_in(http, gateway_base, "diana@example.com", "demo123")
    results = await asyncio.gather(*(diana.call("POST", f"/api/v1/coupons/redeem/{coupon['code']}") for _ in range(2)))
    statuses = sorted(status for status, _ in results)
    assert statuses in ([200, 400], [200, 409]), results


async def test_user_lookup_by_unknown_email_is_404(admin):
    status, body = await admin.call("GET", "/api/v1/users/search/by-email?email=nobody@example.com")
    assert (status, _reason(body)) == (404, "USER_NOT_FOUND")


async def test_a_book_and_its_codes_through_the_challenge_paths(admin):
    book = await admin.ok("POST", "/coupons", {"name": "Challenge book", "code_pattern": "CH-{}", "code_length": 6})
    uploaded = await admin.ok("POST", "/coupons/codes", {"book_id": book["id"], "codes": ["CH-UPLOAD-1", "bad code"]})
    assert uploaded["accepted"] == "1" or uploaded["accepted"] == 1
    assert [r["reason"] for r in uploaded["rejected"]] == ["INVALID_CHARACTERS"]


async def test_generation_streams_ndjson_progress(http, gateway_base, admin):
    book = await admin.ok("POST", "/api/v1/books", {"name": "Streamed book", "code_pattern": "ST-{}", "code_length": 8})
    async with http.post(
        f"{gateway_base}/api/v1/books/{book['id']}/codes/generate",
        json={"count": 120000},
        headers={"authorization": f"Bearer {admin.token}"},
    ) as response:
        assert response.status == 200 and "ndjson" in response.headers["content-type"]
        lines = [line async for line in response.content if line.strip()]
    import json

    updates = [json.loads(line) for line in lines]
    assert len(updates) >= 2 and updates[-1]["done"] and int(updates[-1]["generated"]) == 120000


async def test_backend_metadata_comes_back_as_grpc_metadata_headers(http, gateway_base, admin):
    async with http.get(
        f"{gateway_base}/api/v1/pools",
        headers={"authorization": f"Bearer {admin.token}", "x-request-id": "meta-check-1"},
    ) as response:
        assert response.status == 200
        # the pools service echoes the request id in its initial metadata
        assert response.headers["Grpc-Metadata-x-request-id"] == "meta-check-1"


async def test_welcome10_validated_redeemed_by_two_users_and_rolled_back(http, gateway_base, admin):
    """docs/try-it.md's WELCOME10 walk-through (with charlie and diana, so alice's and bob's demo coupons stay)."""
    charlie = await _signed_in(http, gateway_base, "charlie@example.com", "demo123")
    diana = await _signed_in(http, gateway_base, "diana@example.com", "demo123")
    order = {"order_amount": "59.90", "currency": "EUR"}
    before = await admin.ok("GET", "/api/v1/books/" + (await _book(admin, "WELCOME10"))["id"] + "/stats")

    validated = await charlie.ok("POST", "/api/v1/coupons/validate/WELCOME10", order)
    assert (validated["discount"], validated["currency"], validated["coupon"]["shared"]) == ("5.99", "EUR", True)
    redeemed = await charlie.ok("POST", "/api/v1/coupons/redeem/WELCOME10", {**order, "order_reference": "c-1"})
    assert redeemed["discount"] == "5.99" and redeemed["remaining_redemptions"] == 0
    status, body = await charlie.call("POST", "/api/v1/coupons/validate/WELCOME10", order)
    assert (status, _reason(body)) == (400, "USER_LIMIT_REACHED")
    second = await diana.ok(
        "POST",
        "/api/v1/coupons/redeem/WELCOME10",
        {"order_amount": "120.00", "currency": "EUR", "order_reference": "d-1"},
    )
    assert second["discount"] == "12.00"
    status, body = await diana.call(
        "POST", "/api/v1/coupons/rollback/WELCOME10", {"order_reference": "d-1", "reason": "x"}
    )
    assert status == 403
    undone = await admin.ok(
        "POST", "/api/v1/coupons/rollback/WELCOME10", {"order_reference": "c-1", "reason": "order cancelled"}
    )
    assert undone["discount"] == "5.99"
    after = await admin.ok("GET", "/api/v1/books/" + undone["coupon"]["book_id"] + "/stats")
    assert int(after.get("redemptions", 0)) == int(before.get("redemptions", 0)) + 1
    history = await admin.ok("GET", "/api/v1/coupons/WELCOME10/history")
    assert [e["event"] for e in history["entries"]][-3:] == ["REDEEMED_EVENT", "REDEEMED_EVENT", "ROLLED_BACK_EVENT"]
    # charlie may use it again now
    await charlie.ok("POST", "/api/v1/coupons/validate/WELCOME10", order)


async def test_a_redemption_arrives_on_the_event_watch_as_ndjson(http, gateway_base, admin):
    """The suite as `make run` starts it: the events service reads redemption's feed, and an admin's watch
    over the gateway is an NDJSON stream of the events (its headers come with the first event)."""
    import json

    coupon = await _fresh_coupon(admin, "bob@example.com")
    bob = await _signed_in(http, gateway_base, "bob@example.com", "demo123")
    await bob.ok("POST", f"/api/v1/coupons/redeem/{coupon['code']}", {"order_reference": "watch-1"})
    url = f"{gateway_base}/api/v1/events:watch?from_oldest=true&types=coupon.redeemed&book_id={coupon['book_id']}"
    async with http.get(url, headers={"authorization": f"Bearer {admin.token}"}) as response:
        assert response.status == 200 and "ndjson" in response.headers["content-type"]
        events = []
        async with asyncio.timeout(30):
            while not any(e["subject_id"] == coupon["code"] for e in events):
                events.append(json.loads(await response.content.readline()))
    event = events[-1]
    assert (event["type"], event["source"], event["data"]["order_reference"]) == (
        "coupon.redeemed",
        "redemption",
        "watch-1",
    )
    assert event["id"].startswith("redemption-") and event["cursor"]
