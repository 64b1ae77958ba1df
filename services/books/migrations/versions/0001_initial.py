"""Books and idempotency keys.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from kernel.idempotency import create_table

revision = "0001"
down_revision = None
SCHEMA = "books"


def upgrade() -> None:
    # Versions of the rules pushed to the redemption service. A sequence, because its numbers are never
    # handed out twice, not even by a transaction that rolls back after its push reached the ledger.
    op.execute(sa.schema.CreateSequence(sa.Sequence("rules_version", schema=SCHEMA)))
    op.create_table(
        "books",
        sa.Column("id", postgresql.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("code_pattern", sa.Text, nullable=False),
        sa.Column("code_length", sa.Integer, nullable=False),
        sa.Column("code_alphabet", sa.Text, nullable=False),
        sa.Column("allow_multi_redemption", sa.Boolean, nullable=False),
        sa.Column("max_redemptions_per_user", sa.Integer, nullable=False),
        sa.Column("max_assignments_per_user", sa.Integer, nullable=False),
        sa.Column("lock_ttl_seconds", sa.Integer, nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True)),
        sa.Column("valid_until", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text, nullable=False, server_default="ACTIVE"),
        sa.Column("code_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rules_version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('ACTIVE', 'ARCHIVED')", name="books_status_known"),
        sa.CheckConstraint(
            "valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until", name="books_validity_ordered"
        ),
        schema=SCHEMA,
    )
    # Newest first, the list's keyset order.
    op.create_index("books_created_at_id", "books", ["created_at", "id"], schema=SCHEMA)
    # Books sharing one code space (their codes compete for the same random draws).
    op.create_index("books_code_space", "books", ["code_pattern", "code_length", "code_alphabet"], schema=SCHEMA)
    create_table(SCHEMA)


def downgrade() -> None:
    for table in ("idempotency_keys", "books"):
        op.drop_table(table, schema=SCHEMA)
    op.execute(sa.schema.DropSequence(sa.Sequence("rules_version", schema=SCHEMA)))
