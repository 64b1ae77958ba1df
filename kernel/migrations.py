"""Alembic, one schema per service: each service's migrations/ holds its revisions and a two-line env.py.

The version table lives in the service's own schema, and a transaction-scoped advisory lock keeps two
replicas from migrating the same schema at once.
"""

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from kernel.components import SERVICES
from kernel.db import sqlalchemy_url
from kernel.settings import ROOT

__all__ = ["SERVICES", "config", "downgrade", "upgrade"]


def config(service: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    cfg.set_main_option("schema", service)
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(config(service, database_url), revision)


def downgrade(service: str, database_url: str, revision: str = "base") -> None:
    command.downgrade(config(service, database_url), revision)


def run_env() -> None:
    """The body of every service's migrations/env.py (online mode only: we always have a database)."""
    from alembic import context

    cfg = context.config
    schema = cfg.get_main_option("schema")
    url = cfg.get_main_option("sqlalchemy.url")
    if url is None:  # always set by config() above
        raise RuntimeError("migrations run without sqlalchemy.url in their Alembic config")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"migrate:{schema}"})
        # Checked first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists,
        # and in production each service's role only owns its schema.
        exists = connection.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
        if not exists:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        context.configure(
            connection=connection, version_table="alembic_version", version_table_schema=schema, transactional_ddl=True
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    engine.dispose()


def script_dir(service: str) -> Path:
    return ROOT / "services" / service / "migrations"
