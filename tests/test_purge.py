"""The retention purge (kernel/purge.py): old idempotency keys in every schema and spent refresh tokens go, in
small batches; fresh rows, live tokens and spent tokens still needed for reuse detection stay; a row someone
holds is skipped, never waited for; the service's own background job does it."""

import asyncio
import dataclasses
import time
import uuid

import psycopg
import pytest

from kernel import migrations
from kernel.purge import Purger, idempotency_keys
from services.auth.repository import purge_targets
from tests.support import settings_for

SCHEMAS = migrations.SERVICES  # every schema keeps request_id keys
RETENTION = 86400


def _purger(database_url: str, **overrides) -> Purger:
    settings = settings_for("auth", database_url, purge_batch_size=7, purge_pause_seconds=0.01, **overrides)
    targets = [idempotency_keys(schema) for schema in SCHEMAS if schema != "auth"] + purge_targets(RETENTION)
    return Purger(settings, targets)


def _keys(conn, tag: str, schema: str, count: int, age: str) -> list[str]:
    ids = [f"{tag}-{age.replace(' ', '')}-{i}" for i in range(count)]
    for request_id in ids:
        conn.execute(
            f"INSERT INTO {schema}.idempotency_keys (scope, request_id, request_hash, response, created_at) "
            f"VALUES ('PurgeTest', %s, '\\x00', NULL, now() - interval '{age}')",
            (request_id,),
        )
    return ids


def _remaining_keys(conn, schema: str, tag: str) -> set[str]:
    rows = conn.execute(
        f"SELECT request_id FROM {schema}.idempotency_keys WHERE scope = 'PurgeTest' AND request_id LIKE %s",
        (f"{tag}-%",),
    )
    return {row[0] for row in rows}


def _user(conn) -> str:
    user_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO auth.users (id, email, role, password_hash) VALUES (%s, %s, 'USER', '')",
        (user_id, f"purge-{user_id}@example.com"),
    )
    return user_id


# name -> (expires_at, used_at, revoked_at) as SQL; whether the purge may delete it
TOKENS = {
    "live": ("now() + interval '30 days'", "NULL", "NULL", False),
    "spent, not yet expired (reuse detection)": (
        "now() + interval '20 days'",
        "now() - interval '10 days'",
        "NULL",
        False,
    ),
    "revoked an hour ago": (
        "now() + interval '30 days'",
        "now() - interval '2 hours'",
        "now() - interval '1 hour'",
        False,
    ),
    "expired an hour ago": ("now() - interval '1 hour'", "NULL", "NULL", False),
    "revoked two days ago": ("now() + interval '28 days'", "NULL", "now() - interval '2 days'", True),
    "expired two days ago": ("now() - interval '2 days'", "now() - interval '31 days'", "NULL", True),
}


def _tokens(conn) -> dict[str, bytes]:
    user_id, hashes = _user(conn), {}
    for name, (expires_at, used_at, revoked_at, _) in TOKENS.items():
        hashes[name] = uuid.uuid4().bytes
        conn.execute(
            "INSERT INTO auth.refresh_tokens (token_hash, user_id, family_id, expires_at, used_at, revoked_at) "
            f"VALUES (%s, %s, gen_random_uuid(), {expires_at}, {used_at}, {revoked_at})",
            (hashes[name], user_id),
        )
    return hashes


def _remaining_tokens(conn, hashes: dict[str, bytes]) -> set[str]:
    rows = conn.execute(
        "SELECT token_hash FROM auth.refresh_tokens WHERE token_hash = ANY(%s)", (list(hashes.values()),)
    )
    present = {bytes(row[0]) for row in rows}
    return {name for name, token_hash in hashes.items() if token_hash in present}


async def test_a_pass_purges_old_rows_in_batches_and_leaves_fresh_ones(database_url):
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in SCHEMAS:
            _keys(conn, tag, schema, 20, "25 hours")  # purged in batches of 7
        fresh = {schema: _keys(conn, tag, schema, 3, "23 hours") for schema in SCHEMAS}
        tokens = _tokens(conn)
    purger = _purger(database_url)
    try:
        deleted = await purger.purge_once()
    finally:
        await purger.close()
    with psycopg.connect(database_url) as conn:
        for schema in SCHEMAS:
            assert _remaining_keys(conn, schema, tag) == set(fresh[schema]), schema
        assert _remaining_tokens(conn, tokens) == {name for name, (*_, purged) in TOKENS.items() if not purged}
    # What was deleted is checked in the tables, not in the pass's counts: a service's own background purge
    # in the same test database may take some of these rows first.
    assert set(deleted) >= {f"{schema}.idempotency_keys" for schema in SCHEMAS} | {"auth.refresh_tokens"}


async def test_a_row_someone_holds_is_skipped_not_waited_for(database_url):
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(database_url, autocommit=True) as conn:
        (held, *others) = _keys(conn, tag, "redemption", 5, "2 days")
    purger = _purger(database_url)
    try:
        with psycopg.connect(database_url) as holder:  # a request's transaction holding one old key
            holder.execute(
                "SELECT 1 FROM redemption.idempotency_keys WHERE scope = 'PurgeTest' AND request_id = %s FOR UPDATE",
                (held,),
            )
            started = time.monotonic()
            await purger.purge_once()
            assert time.monotonic() - started < 1.0  # under lock_timeout: SKIP LOCKED, no wait
            with psycopg.connect(database_url) as conn:
                assert _remaining_keys(conn, "redemption", tag) == {held}
        await purger.purge_once()  # released: the next pass takes it
        with psycopg.connect(database_url) as conn:
            assert _remaining_keys(conn, "redemption", tag) == set()
    finally:
        await purger.close()


@pytest.mark.parametrize("service", SCHEMAS)
async def test_each_service_purges_in_its_own_background(database_url, auth_server, signing_key, service):
    """Built as in production with a short PURGE_INTERVAL_SECONDS: its old keys go, nobody asked."""
    from importlib import import_module

    build = import_module(f"services.{service}.app").build
    settings = settings_for(service, database_url, auth_addr=auth_server, purge_interval_seconds=0.3)
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(database_url, autocommit=True) as conn:
        _keys(conn, tag, service, 3, "2 days")
        fresh = _keys(conn, tag, service, 2, "1 hour")
    server, cleanup = await (build(settings, signing_key) if service == "auth" else build(settings))
    await server.start("127.0.0.1:0")
    try:
        deadline = time.monotonic() + 10
        while True:
            with psycopg.connect(database_url) as conn:
                if _remaining_keys(conn, service, tag) == set(fresh):
                    break
            assert time.monotonic() < deadline, "the background purge did not run"
            await asyncio.sleep(0.2)
    finally:
        await server.stop(0)
        await cleanup()


def test_interval_zero_turns_the_purge_off(database_url):
    assert not _purger(database_url, purge_interval_seconds=0).enabled
    assert _purger(database_url).enabled
    assert not Purger(dataclasses.replace(settings_for("auth", ""), database_url=""), []).enabled


async def test_old_outbox_rows_and_old_events_are_purged_and_recent_ones_kept(database_url):
    from kernel.event_feed import outbox_rows
    from services.events.repository import old_events

    day = 86400
    targets = [outbox_rows("books", 7 * day), outbox_rows("pools", 7 * day), old_events(30 * day)]
    purger = Purger(settings_for("events", database_url, purge_batch_size=2), targets)
    tag = uuid.uuid4().hex
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in ("books", "pools"):
            for age in ("8 days", "8 days", "8 days", "6 days"):
                conn.execute(
                    f"INSERT INTO {schema}.event_feed (type, occurred_at, subject_type, subject_id, actor,"
                    " data_schema, data) VALUES ('t', now() - CAST(%s AS interval), 's', %s, 'a', 'd', '{}')",
                    (age, tag),
                )
        for number, age in enumerate(("31 days", "29 days")):
            conn.execute(
                "INSERT INTO events.events (source, source_id, type, occurred_at, subject_type, subject_id, actor,"
                " data_schema, data, ingested_at) VALUES (%s, %s, 't', now(), 's', 'x', 'a', 'd', '{}',"
                " now() - CAST(%s AS interval))",
                (f"test-{tag}", number, age),
            )
    try:
        await purger.purge_once()
    finally:
        await purger.close()
    with psycopg.connect(database_url) as conn:
        for schema in ("books", "pools"):
            kept = conn.execute(f"SELECT count(*) FROM {schema}.event_feed WHERE subject_id = %s", (tag,)).fetchone()
            assert kept == (1,)
        kept = conn.execute("SELECT source_id FROM events.events WHERE source = %s", (f"test-{tag}",)).fetchall()
        assert kept == [(1,)]


async def test_finished_webhook_deliveries_and_their_attempts_are_purged_pending_ones_kept(database_url):
    from services.events.webhook_repository import finished_deliveries

    purger = Purger(settings_for("events", database_url, purge_batch_size=2), [finished_deliveries(7 * 86400)])
    tag = uuid.uuid4().hex
    cases = [  # (state, finished how long ago), and whether it stays
        ("DELIVERED", "8 days", False),
        ("DEAD_LETTER", "8 days", False),
        ("DELIVERED", "6 days", True),
        ("PENDING", None, True),
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        (endpoint,) = conn.execute(
            # Disabled: no dispatcher of another test in this database tries its pending delivery.
            "INSERT INTO events.webhook_endpoints (url, event_types, description, secret, state)"
            " VALUES ('https://example.com/', '{}', %s, 'whsec_x', 'DISABLED') RETURNING id",
            (tag,),
        ).fetchone()
        deliveries = []
        for number, (state, age, _) in enumerate(cases):
            (seq,) = conn.execute(
                "INSERT INTO events.events (source, source_id, type, occurred_at, subject_type, subject_id, actor,"
                " data_schema, data) VALUES (%s, %s, 't', now(), 's', 'x', 'a', 'd', '{}') RETURNING seq",
                (f"hook-{tag}", number),
            ).fetchone()
            (delivery,) = conn.execute(
                "INSERT INTO events.webhook_deliveries (endpoint_id, event_seq, next_attempt_at, state, finished_at)"
                " VALUES (%s, %s, now(), %s, now() - CAST(%s AS interval)) RETURNING id",
                (endpoint, seq, state, age),
            ).fetchone()
            conn.execute(
                "INSERT INTO events.webhook_attempts (delivery_id, number, started_at, duration_ms, outcome)"
                " VALUES (%s, 1, now(), 5, 'HTTP_ERROR')",
                (delivery,),
            )
            deliveries.append(delivery)
    try:
        await purger.purge_once()
    finally:
        await purger.close()
    with psycopg.connect(database_url) as conn:
        kept = {
            row[0]
            for row in conn.execute("SELECT id FROM events.webhook_deliveries WHERE endpoint_id = %s", (endpoint,))
        }
        attempts = {
            row[0]
            for row in conn.execute(
                "SELECT delivery_id FROM events.webhook_attempts WHERE delivery_id = ANY(%s)", (deliveries,)
            )
        }
    expected = {delivery for delivery, (_, _, stays) in zip(deliveries, cases, strict=True) if stays}
    assert kept == attempts == expected
