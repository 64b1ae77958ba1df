"""Pools, their members, the distributions made to them, and idempotency keys.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from kernel.idempotency import create_table

revision = "0001"
down_revision = None
SCHEMA = "pools"
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("id", postgresql.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    # Pool names are unique whatever their letter case.
    op.create_index("pools_name_key", "pools", [sa.text("lower(name)")], unique=True, schema=SCHEMA)
    op.create_index("pools_created_at_id", "pools", ["created_at", "id"], schema=SCHEMA)
    op.create_table(
        "members",
        sa.Column(
            "pool_id", postgresql.UUID, sa.ForeignKey(f"{SCHEMA}.pools.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("user_id", postgresql.UUID, primary_key=True),
        # The email when the member was added, so lists and removal by email need no call to auth.
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("added_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("members_pool_added_user", "members", ["pool_id", "added_at", "user_id"], schema=SCHEMA)
    op.create_index("members_pool_email", "members", ["pool_id", sa.text("lower(email)")], schema=SCHEMA)
    # No foreign key to pools: the record of a distribution outlives a deleted pool.
    op.create_table(
        "distributions",
        sa.Column("id", postgresql.UUID, primary_key=True),
        sa.Column("pool_id", postgresql.UUID, nullable=False),
        sa.Column("book_id", postgresql.UUID, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        # What was asked (codes_per_member or total_codes, request id) and what each member got.
        sa.Column("request", postgresql.JSONB, nullable=False),
        sa.Column("result", postgresql.JSONB, nullable=False),
        sa.Column("assigned", sa.BigInteger, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("mode IN ('EQUAL', 'RANDOM')", name="distributions_mode_known"),
        schema=SCHEMA,
    )
    op.create_index("distributions_pool_created", "distributions", ["pool_id", "created_at"], schema=SCHEMA)
    create_table(SCHEMA)


def downgrade() -> None:
    for table in ("idempotency_keys", "distributions", "members", "pools"):
        op.drop_table(table, schema=SCHEMA)
