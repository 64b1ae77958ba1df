"""Every service's migrations go from empty to head and back down, in their own schema."""

import json
import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

from kernel import migrations


@pytest.fixture
def empty_database(database_url):
    name = f"coupons_migrate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _tables(url: str, schema: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        return {row[0] for row in rows}


@pytest.mark.parametrize("service", [s for s in migrations.SERVICES if migrations.script_dir(s).exists()])
def test_upgrade_to_head_and_downgrade_to_base(empty_database, service):
    migrations.upgrade(service, empty_database)
    created = _tables(empty_database, service)
    assert "alembic_version" in created and len(created) > 1
    # Nothing lands outside the service's own schema.
    assert _tables(empty_database, "public") == set()

    migrations.downgrade(service, empty_database)
    assert _tables(empty_database, service) == {"alembic_version"}

    migrations.upgrade(service, empty_database)
    assert _tables(empty_database, service) == created


def test_hot_path_answers_stored_before_it_replay_after_it(empty_database):
    """Migration 0004 stores the answers of the one-call operations as outcome rows: one kept by the earlier
    code (a redeem's {"coupon": ..., "remaining_redemptions": ...}) still replays after the upgrade."""
    migrations.upgrade("redemption", empty_database, "0003")
    book, user = str(uuid.uuid4()), str(uuid.uuid4())
    coupon = {
        "code": "OLD-1",
        "book_id": book,
        "state": "REDEEMED",
        "user_id": user,
        "lock_expires_at": None,
        "redemption_count": 1,
        "max_redemptions": 1,
        "assigned_at": "2026-11-30T10:00:00+00:00",
        "last_redeemed_at": "2026-12-01T10:00:00+00:00",
    }
    earlier = json.dumps({"coupon": coupon, "remaining_redemptions": 0})
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO redemption.idempotency_keys (scope, request_id, request_hash, response) "
            "VALUES (%s, 'r-1', 'h', convert_to(%s, 'UTF8'))",
            (f"RedeemCoupon:{user}", earlier),
        )
    migrations.upgrade("redemption", empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT outcome, code, state, locked, redemption_count, max_redemptions, last_redeemed_at::text "
            "FROM redemption.replay(%s, 'r-1', 'h')",
            (f"RedeemCoupon:{user}",),
        ).fetchone()
    assert row == ("OK", "OLD-1", "REDEEMED", False, 1, 1, "2026-12-01 10:00:00+00")


def test_truthful_states_bring_existing_coupons_along(empty_database):
    """Migration 0005: a multi-use coupon stored REDEEMED after its first use becomes ASSIGNED; a used-up
    one stays REDEEMED; the downgrade gives the earlier model back."""
    migrations.upgrade("redemption", empty_database, "0004")
    book, user = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO redemption.book_rules (book_id, max_redemptions, allow_multi_redemption, "
            "max_assignments_per_user, lock_ttl_seconds, archived, version) VALUES (%s, 3, true, 0, 300, false, 1)",
            (book,),
        )
        for code, count in (("USED-1", 1), ("USED-3", 3)):
            conn.execute(
                "INSERT INTO redemption.coupons (code, book_id, state, user_id, redemption_count) "
                "VALUES (%s, %s, 'REDEEMED', %s, %s)",
                (code, book, user, count),
            )

    def states() -> list[tuple[str, str]]:
        with psycopg.connect(empty_database) as conn:
            return conn.execute("SELECT code, state FROM redemption.coupons ORDER BY code").fetchall()

    migrations.upgrade("redemption", empty_database)
    assert states() == [("USED-1", "ASSIGNED"), ("USED-3", "REDEEMED")]
    migrations.downgrade("redemption", empty_database, "0004")
    assert states() == [("USED-1", "REDEEMED"), ("USED-3", "REDEEMED")]
