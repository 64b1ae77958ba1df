"""Webhooks: endpoints registered by admins get each matching event, signed, retried on the documented
schedule (stepped through on an injectable clock), dead-lettered after the last try and redelivered by
hand; URLs that point inside the network are refused unless an operator allows them.

The events service here has a database of its own (so no other test's dispatcher claims these
deliveries) and no dispatcher of its own: each test drives one, with a clock it moves."""

import asyncio
import contextlib
import datetime as dt
import random

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from coupons.events.v1 import webhooks_pb2 as pb
from coupons.events.v1 import webhooks_pb2_grpc
from coupons.redemption.v1 import redemption_pb2
from kernel import webhook_signature
from kernel.db import create_engine, create_statement_pool
from kernel.errors import InvalidArgument
from services.events.app import build
from services.events.dispatcher import Dispatcher
from services.events.webhook_repository import WebhookRepository
from services.events.webhook_targets import check_target, networks
from services.events.webhooks import JITTER
from tests.support import LOOPBACK, expect_error, fresh_database, serving, settings_for
from tests.webhook_receiver import HANG, receiving

TIMEOUT = 0.3  # one attempt's limit here, so a receiver that never answers costs little
ENABLED, DISABLED = pb.WEBHOOK_ENDPOINT_STATE_ENABLED, pb.WEBHOOK_ENDPOINT_STATE_DISABLED
PENDING, DELIVERED, DEAD = (
    pb.WEBHOOK_DELIVERY_STATE_PENDING,
    pb.WEBHOOK_DELIVERY_STATE_DELIVERED,
    pb.WEBHOOK_DELIVERY_STATE_DEAD_LETTER,
)


class SteppedClock:
    """The real time plus an offset that tests move forward (the database's own now() is the real one)."""

    def __init__(self):
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def move_to(self, moment: dt.datetime) -> None:
        self.offset = max(self.offset, moment - dt.datetime.now(dt.UTC))


@pytest.fixture(scope="module")
async def webhook_database(database_server_url):
    with fresh_database(database_server_url, ("events",)) as url:
        yield url


@pytest.fixture(scope="module")
async def webhooks(webhook_database, auth_server, redemption_server):
    sources = {"redemption_addr": redemption_server, "books_addr": "127.0.0.1:1", "pools_addr": "127.0.0.1:1"}
    async with serving(
        build, "events", webhook_database, auth_server, **sources, events_poll_seconds=0.05, webhook_concurrency=0
    ) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            yield webhooks_pb2_grpc.WebhookServiceStub(channel)


@contextlib.asynccontextmanager
async def dispatching(settings, *args):
    """A dispatcher of these settings (and clock, random), with its own connections."""
    engine, statements = create_engine(settings), create_statement_pool(settings)
    await statements.open()
    dispatcher = Dispatcher(WebhookRepository(engine, statements), settings, *args)
    try:
        yield dispatcher
    finally:
        await dispatcher.close()
        await statements.close()
        await engine.dispose()


@pytest.fixture
async def dispatcher(webhook_database):
    settings = settings_for(
        "events", webhook_database, webhook_timeout_seconds=TIMEOUT, webhook_lease_seconds=5, webhook_concurrency=4
    )
    async with dispatching(settings, SteppedClock(), random.Random(13)) as dispatcher:
        yield dispatcher


@pytest.fixture
async def receiver():
    async with receiving() as receiver:
        yield receiver


async def register(webhooks, admin, url: str, book_id: str, **fields) -> pb.WebhookEndpoint:
    endpoint = pb.WebhookEndpoint(url=url, book_id=book_id, **fields)
    return await webhooks.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(endpoint=endpoint), metadata=admin.metadata
    )


async def deliveries(webhooks, admin, endpoint_id: str, count: int, timeout: float = 30.0) -> list[pb.WebhookDelivery]:
    """The endpoint's deliveries, once the events service has ingested `count` of them (oldest first)."""
    async with asyncio.timeout(timeout):
        while True:
            response = await webhooks.ListWebhookDeliveries(
                pb.ListWebhookDeliveriesRequest(endpoint_id=endpoint_id), metadata=admin.metadata
            )
            if len(response.deliveries) >= count:
                return list(reversed(response.deliveries))
            await asyncio.sleep(0.05)


async def one_delivery(webhooks, ledger, admin, url: str, **fields) -> tuple[pb.WebhookEndpoint, pb.WebhookDelivery]:
    """An endpoint for a new book, and the delivery of that book's first event (a code assigned)."""
    book_id, (code,) = await ledger.book(1)
    endpoint = await register(webhooks, admin, url, book_id, **fields)
    await ledger.assign(code, ledger.caller())
    (delivery,) = await deliveries(webhooks, admin, endpoint.id, 1)
    return endpoint, delivery


async def get(webhooks, admin, delivery_id: str) -> pb.WebhookDelivery:
    return await webhooks.GetWebhookDelivery(pb.GetWebhookDeliveryRequest(id=delivery_id), metadata=admin.metadata)


def at(timestamp) -> dt.datetime:
    return timestamp.ToDatetime(dt.UTC)


async def test_a_matching_event_arrives_signed_with_its_delivery_id(webhooks, ledger, dispatcher, receiver):
    book_id, codes = await ledger.book(2)
    _, (other_code,) = await ledger.book(1)
    endpoint = await register(webhooks, ledger.admin, receiver.url, book_id, event_types=["coupon.assigned"])
    assert endpoint.secret.startswith("whsec_") and endpoint.secret_hint == endpoint.secret[-4:]
    holder = ledger.caller()
    await ledger.assign(codes[0], holder)
    await ledger.assign(other_code, holder)  # another book: not this endpoint's
    await ledger.stub.LockCoupon(
        redemption_pb2.LockCouponRequest(code=codes[0]), metadata=holder.metadata
    )  # not a type it asked for
    (delivery,) = await deliveries(webhooks, ledger.admin, endpoint.id, 1)

    assert await dispatcher.dispatch_once() == 1
    (request,) = receiver.received
    assert webhook_signature.verify(endpoint.secret, request.headers, request.body) == delivery.id
    event = request.event()
    assert event["type"] == "coupon.assigned" and event["book_id"] == book_id and event["subject_id"] == codes[0]
    assert event["id"] == delivery.event.id and request.headers["content-type"] == "application/json"
    with pytest.raises(webhook_signature.SignatureRefused):
        webhook_signature.verify(webhook_signature.new_secret(), request.headers, request.body)
    with pytest.raises(webhook_signature.SignatureRefused):  # a replay, later than the tolerance
        webhook_signature.verify(endpoint.secret, request.headers, request.body, now=10**10)

    delivered = await get(webhooks, ledger.admin, delivery.id)
    assert delivered.state == DELIVERED and delivered.last_status_code == 200 and delivered.attempt_count == 1
    assert [a.outcome for a in delivered.attempts] == [pb.WEBHOOK_ATTEMPT_OUTCOME_SUCCEEDED]
    assert await dispatcher.dispatch_once() == 0  # nothing else was due: one event matched


async def test_an_attempt_failing_inside_the_dispatcher_is_left_to_its_lease(
    webhook_database, webhooks, ledger, dispatcher, receiver
):
    """A claim the dispatcher cannot even send (here a stored secret that cannot sign) stops neither it
    nor the other deliveries: it is left as a crash would leave it, and tried again after its lease."""
    endpoint, broken = await one_delivery(webhooks, ledger, ledger.admin, receiver.url)
    _, healthy = await one_delivery(webhooks, ledger, ledger.admin, receiver.url)
    with psycopg.connect(webhook_database, autocommit=True) as conn:
        conn.execute("UPDATE events.webhook_endpoints SET secret = 'whsec_x' WHERE id = %s", (endpoint.id,))
    assert await dispatcher.dispatch_once() == 2
    assert [r.delivery_id for r in receiver.received] == [healthy.id]
    left = await get(webhooks, ledger.admin, broken.id)
    assert left.state == PENDING and left.attempt_count == 1 and list(left.attempts) == []
    assert await dispatcher.dispatch_once() == 0  # still leased

    with psycopg.connect(webhook_database, autocommit=True) as conn:
        conn.execute("UPDATE events.webhook_endpoints SET secret = %s WHERE id = %s", (endpoint.secret, endpoint.id))
    dispatcher.clock.move_to(dt.datetime.now(dt.UTC) + dispatcher.lease)
    assert await dispatcher.dispatch_once() == 1
    delivered = await get(webhooks, ledger.admin, broken.id)
    assert delivered.state == DELIVERED and [a.number for a in delivered.attempts] == [2]


def _grow(conn, endpoint: str, events: int) -> None:
    """`events` more events, each with a pending delivery to the endpoint."""
    conn.execute(
        "INSERT INTO events.events (source, source_id, type, occurred_at, subject_type, subject_id, actor,"
        " data_schema, data) SELECT 'plans', coalesce((SELECT max(source_id) FROM events.events), 0) + g,"
        " 'coupon.redeemed', now(), 'coupon', 'C' || g, '', 's', '{}' FROM generate_series(1, %s) g",
        (events,),
    )
    conn.execute(
        "INSERT INTO events.webhook_deliveries (endpoint_id, event_seq, next_attempt_at) SELECT %s, seq, now()"
        " FROM events.events ON CONFLICT DO NOTHING",
        (endpoint,),
    )


async def test_a_round_reads_by_key_however_small_the_tables_were_when_it_was_planned(database_server_url):
    """A connection keeps the plans it made: made while the tables were small (a new install, the
    benchmark's first seconds), a round's statements must still find their rows by key once the tables
    have grown (no ANALYZE in between)."""
    plans: list[str] = []
    call = "SELECT count(*) FROM events.settle_and_claim(CAST(%s AS jsonb), now(), now() + interval '1 minute', 16)"
    with fresh_database(database_server_url, ("events",)) as url:
        with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
            conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
            conn.execute("ALTER TABLE events.events SET (autovacuum_enabled = false)")
            conn.execute("ALTER TABLE events.webhook_deliveries SET (autovacuum_enabled = false)")
            endpoint = conn.execute(
                "INSERT INTO events.webhook_endpoints (url, secret) VALUES ('http://127.0.0.1:9/', 'whsec_AAAA')"
                " RETURNING id"
            ).fetchone()[0]
            _grow(conn, endpoint, 300)
            for _ in range(10):  # the server caches a plan after a few calls
                conn.execute(call, ("[]",))
            _grow(conn, endpoint, 30000)
            conn.execute("LOAD 'auto_explain'")
            for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice"):
                conn.execute(f"SET auto_explain.{setting}")
            assert conn.execute(call, ("[]",)).fetchone()[0] == 16
    scans = [line.strip() for plan in plans for line in plan.splitlines() if "Seq Scan" in line]
    assert plans and not [s for s in scans if " events " in s or "webhook_deliveries" in s], scans


async def test_a_failed_try_is_retried_on_the_schedule(webhooks, ledger, dispatcher, receiver):
    endpoint, delivery = await one_delivery(webhooks, ledger, ledger.admin, receiver.url)
    receiver.answers = [500, 503]
    first_retry = dispatcher.schedule.first_seconds

    assert await dispatcher.dispatch_once() == 1
    failed = await get(webhooks, ledger.admin, delivery.id)
    assert failed.state == PENDING and failed.last_status_code == 500 and failed.last_error == "HTTP 500"
    wait = (at(failed.next_attempt_time) - at(failed.attempts[0].start_time)).total_seconds()
    assert first_retry * (1 - JITTER) - 1 <= wait <= first_retry * (1 + JITTER) + 1

    dispatcher.clock.move_to(at(failed.next_attempt_time) - dt.timedelta(seconds=2))
    assert await dispatcher.dispatch_once() == 0  # not yet due
    dispatcher.clock.move_to(at(failed.next_attempt_time))
    assert await dispatcher.dispatch_once() == 1  # 503: the second wait is twice the first
    failed = await get(webhooks, ledger.admin, delivery.id)
    wait = (at(failed.next_attempt_time) - at(failed.attempts[1].start_time)).total_seconds()
    assert 2 * first_retry * (1 - JITTER) - 1 <= wait <= 2 * first_retry * (1 + JITTER) + 1

    dispatcher.clock.move_to(at(failed.next_attempt_time))
    assert await dispatcher.dispatch_once() == 1
    delivered = await get(webhooks, ledger.admin, delivery.id)
    assert delivered.state == DELIVERED and delivered.attempt_count == 3
    assert [a.status_code for a in delivered.attempts] == [500, 503, 200]
    assert len({r.delivery_id for r in receiver.received}) == 1  # each try carried the same delivery id


async def test_a_receiver_that_never_answers_is_dead_lettered_then_redelivered(webhooks, ledger, dispatcher, receiver):
    endpoint, delivery = await one_delivery(webhooks, ledger, ledger.admin, receiver.url)
    schedule = dispatcher.schedule
    receiver.answers = [HANG] * schedule.tries
    waits = []
    for _ in range(schedule.tries):
        assert await dispatcher.dispatch_once() == 1
        state = await get(webhooks, ledger.admin, delivery.id)
        if state.state == PENDING:
            waits.append((at(state.next_attempt_time) - at(state.attempts[-1].start_time)).total_seconds())
            dispatcher.clock.move_to(at(state.next_attempt_time))

    dead = await get(webhooks, ledger.admin, delivery.id)
    assert dead.state == DEAD and dead.attempt_count == schedule.tries == 12
    assert {a.outcome for a in dead.attempts} == {pb.WEBHOOK_ATTEMPT_OUTCOME_TIMEOUT}
    # The schedule: each wait doubles, up to the longest, within the jitter; about a day in all (Voucherify's).
    assert len(waits) == len(schedule.nominal_waits()) == 11
    for wait, nominal in zip(waits, schedule.nominal_waits(), strict=True):
        assert nominal * (1 - JITTER) - 1 <= wait <= nominal * (1 + JITTER) + 1
    assert 20 * 3600 < sum(schedule.nominal_waits()) < 26 * 3600
    assert await dispatcher.dispatch_once() == 0  # a dead letter is not tried again by itself
    listed = await webhooks.ListWebhookDeliveries(
        pb.ListWebhookDeliveriesRequest(endpoint_id="-", state=DEAD), metadata=ledger.admin.metadata
    )
    assert delivery.id in {d.id for d in listed.deliveries}

    again = await webhooks.RedeliverWebhook(
        pb.RedeliverWebhookRequest(id=delivery.id, request_id="redeliver-1"), metadata=ledger.admin.metadata
    )
    assert again.state == PENDING
    await expect_error(  # a second redelivery while it is pending is refused (the same request id is not)
        webhooks.RedeliverWebhook(pb.RedeliverWebhookRequest(id=delivery.id), metadata=ledger.admin.metadata),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DELIVERY_PENDING",
    )
    replay = await webhooks.RedeliverWebhook(
        pb.RedeliverWebhookRequest(id=delivery.id, request_id="redeliver-1"), metadata=ledger.admin.metadata
    )
    assert replay.state == PENDING
    assert await dispatcher.dispatch_once() == 1
    (request,) = receiver.received
    assert request.delivery_id == delivery.id
    delivered = await get(webhooks, ledger.admin, delivery.id)
    assert delivered.state == DELIVERED and delivered.attempt_count == 13


async def test_a_rotated_secret_signs_the_next_delivery(webhooks, ledger, dispatcher, receiver):
    book_id, (code,) = await ledger.book(1)
    endpoint = await register(webhooks, ledger.admin, receiver.url, book_id)
    rotated = await webhooks.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(id=endpoint.id), metadata=ledger.admin.metadata
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != endpoint.secret
    assert at(rotated.secret_rotate_time) >= at(endpoint.create_time)
    fetched = await webhooks.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=endpoint.id), metadata=ledger.admin.metadata
    )
    assert fetched.secret == "" and fetched.secret_hint == rotated.secret[-4:]  # shown once only
    await ledger.assign(code, ledger.caller())
    await deliveries(webhooks, ledger.admin, endpoint.id, 1)
    assert await dispatcher.dispatch_once() == 1

    (request,) = receiver.received
    webhook_signature.verify(rotated.secret, request.headers, request.body)
    with pytest.raises(webhook_signature.SignatureRefused):
        webhook_signature.verify(endpoint.secret, request.headers, request.body)


async def test_a_disabled_endpoint_keeps_its_deliveries_until_enabled(webhooks, ledger, dispatcher, receiver):
    endpoint, delivery = await one_delivery(webhooks, ledger, ledger.admin, receiver.url, description="CRM")
    mask = field_mask_pb2.FieldMask(paths=["state"])
    disabled = await webhooks.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(endpoint=pb.WebhookEndpoint(id=endpoint.id, state=DISABLED), update_mask=mask),
        metadata=ledger.admin.metadata,
    )
    assert disabled.state == DISABLED and disabled.description == "CRM" and disabled.url == receiver.url
    assert await dispatcher.dispatch_once() == 0
    await webhooks.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(endpoint=pb.WebhookEndpoint(id=endpoint.id, state=ENABLED), update_mask=mask),
        metadata=ledger.admin.metadata,
    )
    assert await dispatcher.dispatch_once() == 1
    assert [r.delivery_id for r in receiver.received] == [delivery.id]

    bad_mask = await expect_error(
        webhooks.UpdateWebhookEndpoint(
            pb.UpdateWebhookEndpointRequest(
                endpoint=pb.WebhookEndpoint(id=endpoint.id), update_mask=field_mask_pb2.FieldMask(paths=["secret"])
            ),
            metadata=ledger.admin.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "secret cannot be updated" in bad_mask.field_violations["update_mask"]
    listed = await webhooks.ListWebhookEndpoints(
        pb.ListWebhookEndpointsRequest(page_size=1), metadata=ledger.admin.metadata
    )
    assert len(listed.endpoints) == 1 and listed.next_page_token and listed.total_size >= 1
    assert all(e.secret == "" for e in listed.endpoints)


async def test_a_target_refused_at_the_attempt_is_recorded_and_retried(webhook_database, webhooks, ledger, receiver):
    """The address is checked again at each attempt: an operator who narrows the allowed networks stops
    deliveries to targets that were allowed when they were registered."""
    endpoint, delivery = await one_delivery(webhooks, ledger, ledger.admin, receiver.url)
    settings = settings_for("events", webhook_database, webhook_allowed_networks=(), webhook_timeout_seconds=TIMEOUT)
    async with dispatching(settings) as strict:
        assert await strict.dispatch_once() == 1
    refused = await get(webhooks, ledger.admin, delivery.id)
    assert refused.state == PENDING and refused.attempts[0].outcome == pb.WEBHOOK_ATTEMPT_OUTCOME_TARGET_REFUSED
    assert receiver.received == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://localhost:8080/hooks",
        "https://10.1.2.3/hooks",
        "https://192.168.0.10/",
        "https://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's metadata service
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "https://100.64.0.1/",  # carrier-grade NAT, shared
        "http://0.0.0.0/",
        "https://[fc00::1]/",
    ],
)
async def test_urls_inside_the_network_are_refused(url):
    with pytest.raises(InvalidArgument) as refused:
        await check_target(url, allow_plain_http=True, allowed_networks=networks(()))
    assert refused.value.reason == "WEBHOOK_TARGET_NOT_ALLOWED"
    assert "WEBHOOK_ALLOWED_NETWORKS" in refused.value.violations[0].description


@pytest.mark.parametrize(
    "url, allow_plain_http",
    [
        ("ftp://93.184.215.14/", True),
        ("http://93.184.215.14/", False),  # production: https only
        ("https://user:pass@93.184.215.14/", True),
        ("https://93.184.215.14/#part", True),
        ("https:///nohost", True),
        ("https://" + "a" * 2100 + ".com/", True),
        ("", True),
    ],
)
async def test_malformed_urls_are_refused(url, allow_plain_http):
    with pytest.raises(InvalidArgument) as refused:
        await check_target(url, allow_plain_http=allow_plain_http, allowed_networks=networks(()))
    assert refused.value.reason == "INVALID_WEBHOOK_URL"


async def test_public_urls_and_allowed_networks_pass():
    await check_target("https://93.184.215.14/hooks", allow_plain_http=False, allowed_networks=networks(()))
    await check_target("http://127.0.0.1:9/hooks", allow_plain_http=True, allowed_networks=networks(LOOPBACK))
    await check_target("http://[::1]:9/", allow_plain_http=True, allowed_networks=networks(LOOPBACK))


async def test_registering_a_refused_url_names_the_field_and_the_rule(webhooks, ledger):
    for url, reason in [
        ("http://10.0.0.1/hooks", "WEBHOOK_TARGET_NOT_ALLOWED"),  # loopback is allowed here, private is not
        ("http://no-such-host.invalid/hooks", "WEBHOOK_HOST_UNKNOWN"),
        ("mailto:ops@example.com", "INVALID_WEBHOOK_URL"),
    ]:
        error = await expect_error(
            webhooks.CreateWebhookEndpoint(
                pb.CreateWebhookEndpointRequest(endpoint=pb.WebhookEndpoint(url=url)), metadata=ledger.admin.metadata
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            reason,
        )
        assert set(error.field_violations) == {"endpoint.url"}
    error = await expect_error(
        webhooks.CreateWebhookEndpoint(
            pb.CreateWebhookEndpointRequest(
                endpoint=pb.WebhookEndpoint(url="http://127.0.0.1:9/", event_types=["coupon.nope"], book_id="x")
            ),
            metadata=ledger.admin.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "endpoint.event_types" in error.field_violations or "endpoint.book_id" in error.field_violations
    holder = ledger.caller()
    await expect_error(
        webhooks.ListWebhookEndpoints(pb.ListWebhookEndpointsRequest(), metadata=holder.metadata),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_registering_twice_with_one_request_id_makes_one_endpoint(webhooks, ledger):
    request = pb.CreateWebhookEndpointRequest(
        endpoint=pb.WebhookEndpoint(url="http://127.0.0.1:9/once"), request_id="create-once"
    )
    first = await webhooks.CreateWebhookEndpoint(request, metadata=ledger.admin.metadata)
    again = await webhooks.CreateWebhookEndpoint(request, metadata=ledger.admin.metadata)
    assert again.id == first.id and again.secret == first.secret
    changed = pb.CreateWebhookEndpointRequest(
        endpoint=pb.WebhookEndpoint(url="http://127.0.0.1:9/other"), request_id="create-once"
    )
    await expect_error(
        webhooks.CreateWebhookEndpoint(changed, metadata=ledger.admin.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
    )
