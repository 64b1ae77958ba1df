"""How long after a redemption it may be rolled back (seconds; 7 days unless the book says otherwise).

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
SCHEMA = "books"


def upgrade() -> None:
    op.add_column(
        "books",
        sa.Column("rollback_window_seconds", sa.Integer, nullable=False, server_default=str(7 * 24 * 3600)),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("books", "rollback_window_seconds", schema=SCHEMA)
