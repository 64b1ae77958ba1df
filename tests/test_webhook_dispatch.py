"""The webhook dispatcher as `make run` runs it, in two replicas of the events service: they share the
deliveries without ever trying one at the same time, and a `kill -9` between claiming a delivery and
recording its answer leaves it to be delivered after the restart, with the same delivery id.

The suite here has a database of its own, so no other suite's dispatcher takes part."""

import asyncio
import os
import re
import signal
import urllib.request

import aiohttp
import pytest

from coupons.events.v1 import webhooks_pb2 as pb
from coupons.events.v1 import webhooks_pb2_grpc
from kernel.grpc_clients import channel
from suite.processes import wait_serving
from tests.fixtures_suite import free_suite_ports, start_test_suite
from tests.suite_clients import SuiteClient
from tests.support import fresh_database
from tests.webhook_receiver import HANG, receiving

LEASE_SECONDS = 4.0  # a killed dispatcher's claim runs out this long after it was made
_ATTEMPTS = re.compile(r'^coupons_webhook_attempts_total\{outcome="SUCCEEDED"\} (\S+)$', re.MULTILINE)


@pytest.fixture(scope="module")
async def dispatch_suite(database_server_url, tmp_path_factory):
    with fresh_database(database_server_url, ()) as database_url:
        suite, _ = await start_test_suite(
            database_url,
            tmp_path_factory.mktemp("webhook-run"),
            free_suite_ports({"events": 2}),
            extra_env={
                "WEBHOOK_TIMEOUT_SECONDS": "2",
                "WEBHOOK_LEASE_SECONDS": str(LEASE_SECONDS),
                "WEBHOOK_CONCURRENCY": "4",  # fewer than the events below, so neither replica can take them all
                "EVENTS_POLL_SECONDS": "0.05",
                "DB_POOL_SIZE": "3",
            },
            replicas={"events": 2},
        )
        client = SuiteClient(suite, database_url)
        events_channel = channel(suite.target("events"))
        try:
            yield suite, client, webhooks_pb2_grpc.WebhookServiceStub(events_channel)
        finally:
            await events_channel.close()
            await client.close()
            await asyncio.to_thread(suite.stop)


async def endpoint_for(client: SuiteClient, webhooks, url: str, book_id: str) -> pb.WebhookEndpoint:
    endpoint = pb.WebhookEndpoint(url=url, book_id=book_id, event_types=["coupon.assigned"])
    return await webhooks.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(endpoint=endpoint), metadata=client.admin.metadata
    )


def metrics_of(component) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{component.metrics_port}/metrics", timeout=10).read().decode()


def delivered_by(component) -> int:
    return sum(int(float(value)) for value in _ATTEMPTS.findall(metrics_of(component)))


async def test_two_dispatchers_share_the_deliveries_and_never_try_one_twice(dispatch_suite):
    suite, client, webhooks = dispatch_suite
    events = 40
    async with receiving(answer_seconds=0.2) as receiver:  # slow answers keep several claims in flight at once
        book_id, codes = await client.book(events)
        endpoint = await endpoint_for(client, webhooks, receiver.url, book_id)
        before = [delivered_by(c) for c in suite.replicas_of("events")]
        holder = client.caller()
        await asyncio.gather(*(client.assign(code, holder) for code in codes))
        await receiver.wait_for(events)
        await asyncio.sleep(0.5)  # a second delivery of any of them would have arrived by now
        received = list(receiver.received)

    ids = [r.delivery_id for r in received]
    assert len(ids) == len(set(ids)) == events
    assert sorted(r.event()["subject_id"] for r in received) == sorted(codes)
    rows = client.db.execute(
        "SELECT d.state, d.attempt_count, count(a.number) FROM events.webhook_deliveries d"
        " LEFT JOIN events.webhook_attempts a ON a.delivery_id = d.id WHERE d.endpoint_id = %s"
        " GROUP BY d.id",
        (endpoint.id,),
    ).fetchall()
    assert sorted(rows) == [("DELIVERED", 1, 1)] * events
    shares = [delivered_by(c) - b for c, b in zip(suite.replicas_of("events"), before, strict=True)]
    assert sum(shares) == events and min(shares) > 0, f"deliveries per replica: {shares}"
    text = metrics_of(suite.replicas_of("events")[0])
    assert re.search(r"^coupons_webhook_backlog \S+$", text, re.MULTILINE)
    assert re.search(r"^coupons_webhook_oldest_pending_seconds \S+$", text, re.MULTILINE)


async def test_a_dispatcher_killed_mid_attempt_delivers_after_the_restart(dispatch_suite):
    suite, client, webhooks = dispatch_suite
    async with receiving() as receiver:
        receiver.answers = [HANG]  # the first request is left unanswered while the dispatchers are killed
        book_id, (code,) = await client.book(1)
        endpoint = await endpoint_for(client, webhooks, receiver.url, book_id)
        await client.assign(code, client.caller())
        async with asyncio.timeout(30):
            await receiver.arrived.wait()
        claimed = client.one(
            "SELECT id::text, state, attempt_count FROM events.webhook_deliveries WHERE endpoint_id = %s", endpoint.id
        )
        assert claimed[1:] == ("PENDING", 1)  # claimed and sent, its answer not recorded

        replicas = suite.replicas_of("events")
        for component in replicas:
            os.kill(component.process.pid, signal.SIGKILL)
        for component in replicas:
            await asyncio.to_thread(component.process.wait)
        restarted = [suite.start("events", "services.events", c.replica) for c in replicas]
        for component in restarted:
            await wait_serving(component)

        (request,) = await receiver.wait_for(1, timeout=LEASE_SECONDS + 30)
    assert request.delivery_id == claimed[0]
    assert request.event()["subject_id"] == code
    delivered = client.one(
        "SELECT state, attempt_count, (SELECT count(*) FROM events.webhook_attempts WHERE delivery_id = d.id)"
        " FROM events.webhook_deliveries d WHERE id = %s",
        claimed[0],
    )
    # The cut attempt counts (its number is used) but left no record: nothing came back from it.
    assert delivered == ("DELIVERED", 2, 1)
    status = await webhooks.GetWebhookDelivery(
        pb.GetWebhookDeliveryRequest(id=claimed[0]), metadata=client.admin.metadata
    )
    assert status.state == pb.WEBHOOK_DELIVERY_STATE_DELIVERED and [a.number for a in status.attempts] == [2]


async def test_webhooks_over_http_through_the_gateway(dispatch_suite):
    """The REST routes of the proto's annotations: create, list, a refusal in the google.rpc.Status shape."""
    suite, client, _ = dispatch_suite
    base = f"http://127.0.0.1:{suite.ports['gateway']}/api/v1"
    headers = {"authorization": client.admin.metadata[0][1]}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/webhooks", json={"url": "http://127.0.0.1:9/rest"}) as response:
            assert response.status == 200
            created = await response.json()
        assert created["secret"].startswith("whsec_") and created["state"] == "WEBHOOK_ENDPOINT_STATE_ENABLED"
        async with http.get(f"{base}/webhooks/{created['id']}") as response:
            assert (await response.json())["secret"] == ""
        async with http.post(f"{base}/webhooks/{created['id']}:rotateSecret", json={}) as response:
            assert (await response.json())["secret"] not in ("", created["secret"])
        async with http.get(
            f"{base}/webhooks/-/deliveries", params={"state": "WEBHOOK_DELIVERY_STATE_PENDING"}
        ) as response:
            assert response.status == 200 and "total_size" in await response.json()
        async with http.post(f"{base}/webhooks", json={"url": "http://169.254.169.254/latest"}) as response:
            assert response.status == 400
            refused = await response.json()
        violations = [d for d in refused["details"] if d["@type"].endswith("BadRequest")]
        assert violations[0]["field_violations"][0]["field"] == "endpoint.url"
        assert any(d.get("reason") == "WEBHOOK_TARGET_NOT_ALLOWED" for d in refused["details"])
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{base}/webhooks") as response:
            assert response.status == 401
