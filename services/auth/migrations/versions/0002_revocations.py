"""Revocations: accounts whose access tokens the services stop honouring (deactivation).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
SCHEMA = "auth"


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column(
            "user_id", postgresql.UUID, sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    # Services poll the recent ones every few seconds.
    op.create_index("revocations_by_update", "revocations", ["updated_at"], schema=SCHEMA)
    # Accounts deactivated before this migration have live tokens only for an access-token lifetime;
    # list them so those are refused too.
    op.execute(
        f"INSERT INTO {SCHEMA}.revocations (user_id, not_before, disabled) "
        f"SELECT id, now(), true FROM {SCHEMA}.users WHERE NOT active"
    )


def downgrade() -> None:
    op.drop_table("revocations", schema=SCHEMA)
