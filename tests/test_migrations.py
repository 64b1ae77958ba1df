"""Every service's migrations go from empty to head and back down, in their own schema."""

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
