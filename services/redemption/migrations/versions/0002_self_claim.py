"""Book rules say whether a USER may claim random codes of the book for themself.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
SCHEMA = "redemption"


def upgrade() -> None:
    op.add_column(
        "book_rules",
        sa.Column("allow_self_claim", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("book_rules", "allow_self_claim", schema=SCHEMA)
