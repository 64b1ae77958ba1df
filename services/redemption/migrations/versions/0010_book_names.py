"""Coupons carry their book's name: books sends it with the rules (BookRules.book_name), the ledger keeps
it in book_rules, and every answer with a coupon has it (outcome_of reads it with the rules it already
joins). A book stored before this migration carries '' until its next change pushes its rules again.

Revision ID: 0010
"""

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
SCHEMA = "redemption"

_discounts = importlib.import_module("services.redemption.migrations.versions.0007_discounts")

# outcome_of as 0007 has it, plus the book's name as the last attribute.
OUTCOME_OF = _discounts.OUTCOME_OF.replace(
    "r.currency, r.min_order_amount\n", "r.currency, r.min_order_amount, r.book_name\n", 1
)
assert OUTCOME_OF != _discounts.OUTCOME_OF, "0007's outcome_of changed shape"


def upgrade() -> None:
    op.add_column("book_rules", sa.Column("book_name", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.execute("ALTER TYPE redemption.outcome ADD ATTRIBUTE book_name text")
    op.execute(OUTCOME_OF)


def downgrade() -> None:
    op.execute("ALTER TYPE redemption.outcome DROP ATTRIBUTE book_name")
    op.execute(_discounts.OUTCOME_OF)
    op.drop_column("book_rules", "book_name", schema=SCHEMA)
