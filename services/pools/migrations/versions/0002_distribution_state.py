"""Distributions record their plan before the ledger runs it (PENDING), then DONE.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
SCHEMA = "pools"


def upgrade() -> None:
    op.add_column("distributions", sa.Column("state", sa.Text, nullable=False, server_default="DONE"), schema=SCHEMA)
    op.create_check_constraint(
        "distributions_state_known", "distributions", "state IN ('PENDING', 'DONE')", schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_constraint("distributions_state_known", "distributions", schema=SCHEMA)
    op.drop_column("distributions", "state", schema=SCHEMA)
