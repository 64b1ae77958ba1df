"""What a web client meets in the JSON of the APIs, through the suite's gateway: every list tells its
total_size, counts that fit 32 bits are JSON numbers, the same in every message (Pool.member_count was a
string while DistributionPlan.member_count was a number), coupons name their book, and a PATCH changes the
fields its body names, zero values included."""

import json
import uuid

import aiohttp
import pytest


@pytest.fixture(scope="module")
async def admin_api(gateway_base):
    async with aiohttp.ClientSession(base_url=gateway_base) as http:
        body = {"email": "admin@example.com", "password": "admin123"}
        async with http.post("/api/v1/auth/login", json=body) as response:
            token = (await response.json())["access_token"]

        async def call(method: str, path: str, body=None):
            async with http.request(method, path, json=body, headers={"authorization": f"Bearer {token}"}) as answer:
                assert answer.status == 200, await answer.text()
                return await answer.json() if answer.content_type == "application/json" else await answer.text()

        yield call


async def _count_all(admin_api, path: str, items: str) -> int:
    total, token, totals = 0, "", set()
    while True:
        page = await admin_api("GET", f"{path}?page_size=2&page_token={token}")
        total += len(page[items])
        totals.add(page["total_size"])
        token = page["next_page_token"]
        if not token:
            return next(iter(totals)) if totals == {total} else pytest.fail(f"{path}: totals {totals} != {total}")


@pytest.mark.parametrize(
    "path, items",
    [
        ("/api/v1/pools", "pools"),
        ("/api/v1/books", "books"),
        ("/api/v1/users", "users"),
        ("/api/v1/users/{alice}/coupons", "coupons"),
        ("/api/v1/books/{summer}/coupons", "coupons"),
        ("/api/v1/books/{summer}/history", "entries"),
        ("/api/v1/coupons/{code}/history", "entries"),
    ],
)
async def test_every_list_has_its_total_size_as_a_number(admin_api, path, items):
    alice = await admin_api("GET", "/api/v1/users/search/by-email?email=alice@example.com")
    summer = (await admin_api("GET", "/api/v1/books?name_contains=Summer%20Sale%202026"))["books"][0]
    code = (await admin_api("GET", f"/api/v1/books/{summer['id']}/coupons?page_size=1"))["coupons"][0]["code"]
    path = path.format(alice=alice["id"], summer=summer["id"], code=code)
    assert isinstance(await _count_all(admin_api, path, items), int)


async def test_a_coupon_names_its_book(admin_api):
    alice = await admin_api("GET", "/api/v1/users/search/by-email?email=alice@example.com")
    coupons = (await admin_api("GET", f"/users/{alice['id']}/coupons"))["coupons"]
    books = {b["id"]: b["name"] for b in (await admin_api("GET", "/api/v1/books?page_size=1000"))["books"]}
    assert coupons and all(c["book_name"] == books[c["book_id"]] for c in coupons)


async def test_a_patch_changes_the_fields_its_body_names_zero_values_too(admin_api):
    """The gateway infers update_mask from the body's keys (as grpc-gateway does), leaving out the output-only
    fields a client sends back as it read them; an update_mask in the query wins."""
    book = await admin_api(
        "POST", "/api/v1/books", {"name": f"Masked {uuid.uuid4().hex[:8]}", "max_assignments_per_user": 3}
    )
    path = f"/api/v1/books/{book['id']}"
    cleared = await admin_api("PATCH", path, {"max_assignments_per_user": 0, "allow_self_claim": False})
    assert (cleared["max_assignments_per_user"], cleared["name"]) == (0, book["name"])
    as_read = {**cleared, "description": "sent back whole", "code_count": "99", "status": "ARCHIVED"}
    updated = await admin_api("PATCH", path, as_read)
    assert (updated["description"], updated["code_count"], updated["status"]) == ("sent back whole", "0", "ACTIVE")
    only = await admin_api("PATCH", f"{path}?update_mask=name", {"name": "Only the name", "description": "ignored"})
    assert (only["name"], only["description"]) == ("Only the name", "sent back whole")


async def test_pool_member_counts_are_numbers_in_every_message(admin_api):
    pools = (await admin_api("GET", "/api/v1/pools"))["pools"]
    pool = next(p for p in pools if p["name"] == "Beta Testers")
    assert isinstance(pool["member_count"], int) and pool["member_count"] >= 3
    assert (await admin_api("GET", f"/api/v1/pools/{pool['id']}"))["member_count"] == pool["member_count"]
    members = await admin_api("GET", f"/api/v1/pools/{pool['id']}/users")
    assert members["total_size"] == pool["member_count"] == len(members["members"])
    book = (await admin_api("GET", "/api/v1/books?name_contains=VIP"))["books"][0]
    request = {"book_id": book["id"], "mode": "RANDOM", "total_codes": 2}
    plan = await admin_api("POST", f"/api/v1/pools/{pool['id']}/distribute:preview", request)
    assert plan["member_count"] == pool["member_count"]
    distribution = await admin_api("POST", f"/api/v1/pools/{pool['id']}/distribute", request)
    assert distribution["assigned"] == 2


async def test_generation_progress_counts_are_numbers(admin_api):
    book = await admin_api("POST", "/api/v1/books", {"name": f"Counts {uuid.uuid4().hex[:8]}"})
    lines = await admin_api("POST", f"/api/v1/books/{book['id']}/codes/generate", {"count": 50})
    last = json.loads(lines.strip().splitlines()[-1])
    assert last == {"generated": 50, "requested": 50, "done": True, "code_space": last["code_space"]}


async def test_the_openapi_document_says_integer_for_these_counts(admin_api):
    schemas = (await admin_api("GET", "/openapi.json"))["components"]["schemas"]
    for message, field in [
        ("coupons.pools.v1.Pool", "member_count"),
        ("coupons.pools.v1.ListPoolsResponse", "total_size"),
        ("coupons.pools.v1.Distribution", "assigned"),
        ("coupons.books.v1.GenerateCodesProgress", "generated"),
    ]:
        assert schemas[message]["properties"][field]["type"] == "integer", (message, field)
