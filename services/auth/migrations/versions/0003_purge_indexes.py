"""Indexes for the retention purge (kernel/purge.py): idempotency keys by age, refresh tokens by expiry, revocation.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

from kernel.idempotency import create_age_index, drop_age_index

revision = "0003"
down_revision = "0002"
SCHEMA = "auth"


def upgrade() -> None:
    create_age_index(SCHEMA)
    op.create_index("refresh_tokens_expires_at", "refresh_tokens", ["expires_at"], schema=SCHEMA)
    op.create_index(
        "refresh_tokens_revoked_at",
        "refresh_tokens",
        ["revoked_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("revoked_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("refresh_tokens_revoked_at", table_name="refresh_tokens", schema=SCHEMA)
    op.drop_index("refresh_tokens_expires_at", table_name="refresh_tokens", schema=SCHEMA)
    drop_age_index(SCHEMA)
