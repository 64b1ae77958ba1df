"""What a book's codes give: a percentage or a fixed amount in a currency, an optional maximum discount
and minimum order amount. Amounts are kept as the admin gave them (decimal text, checked against the
currency's minor unit); the ledger prices orders with them.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
SCHEMA = "books"
COLUMNS = ("discount_type", "percent_off", "amount_off", "max_discount", "min_order_amount", "currency")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("books", sa.Column(name, sa.Text, nullable=False, server_default=""), schema=SCHEMA)


def downgrade() -> None:
    for name in reversed(COLUMNS):
        op.drop_column("books", name, schema=SCHEMA)
