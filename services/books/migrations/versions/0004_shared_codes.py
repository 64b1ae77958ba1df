"""Shared books: codes without a holder that any signed-in user redeems, up to a global cap per code.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
SCHEMA = "books"


def upgrade() -> None:
    op.add_column("books", sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false()), schema=SCHEMA)
    op.add_column(
        "books", sa.Column("max_redemptions_total", sa.Integer, nullable=False, server_default="0"), schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_column("books", "max_redemptions_total", schema=SCHEMA)
    op.drop_column("books", "shared", schema=SCHEMA)
