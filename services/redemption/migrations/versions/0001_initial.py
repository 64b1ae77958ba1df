"""Book rules, the coupon ledger, per-(user, book) holdings, history and idempotency keys.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from kernel.idempotency import create_table

revision = "0001"
down_revision = None
SCHEMA = "redemption"
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "book_rules",
        sa.Column("book_id", postgresql.UUID, primary_key=True),
        sa.Column("max_redemptions", sa.Integer, nullable=False),
        sa.Column("allow_multi_redemption", sa.Boolean, nullable=False),
        sa.Column("max_assignments_per_user", sa.Integer, nullable=False),  # 0: no limit
        sa.Column("lock_ttl_seconds", sa.Integer, nullable=False),
        sa.Column("valid_from", TIMESTAMP),
        sa.Column("valid_until", TIMESTAMP),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("max_redemptions >= 1", name="book_rules_max_redemptions_positive"),
        sa.CheckConstraint("max_assignments_per_user >= 0", name="book_rules_max_assignments_not_negative"),
        sa.CheckConstraint("lock_ttl_seconds BETWEEN 1 AND 3600", name="book_rules_lock_ttl_range"),
        schema=SCHEMA,
    )
    # `state` is the ledger state without the lock: AVAILABLE, ASSIGNED or REDEEMED. A coupon is LOCKED
    # while lock_expires_at is in the future, so an expired lock needs no sweeper to stop counting.
    op.create_table(
        "coupons",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("book_id", postgresql.UUID, sa.ForeignKey(f"{SCHEMA}.book_rules.book_id"), nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="AVAILABLE"),
        sa.Column("user_id", postgresql.UUID),
        sa.Column("lock_id", postgresql.UUID),
        sa.Column("lock_expires_at", TIMESTAMP),
        sa.Column("redemption_count", sa.Integer, nullable=False, server_default="0"),
        # Drawn once per insert; random assignment takes the first available key after a random point.
        sa.Column("rand_key", sa.Float(precision=53), nullable=False, server_default=sa.text("random()")),
        sa.Column("assigned_at", TIMESTAMP),
        sa.Column("last_redeemed_at", TIMESTAMP),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("state IN ('AVAILABLE', 'ASSIGNED', 'REDEEMED')", name="coupons_state_known"),
        sa.CheckConstraint("(state = 'AVAILABLE') = (user_id IS NULL)", name="coupons_holder_iff_held"),
        sa.CheckConstraint("(lock_id IS NULL) = (lock_expires_at IS NULL)", name="coupons_lock_complete"),
        schema=SCHEMA,
    )
    op.create_index(
        "coupons_available_by_rand_key",
        "coupons",
        ["book_id", "rand_key"],
        schema=SCHEMA,
        postgresql_where=sa.text("state = 'AVAILABLE'"),
    )
    op.create_index("coupons_book_state_code", "coupons", ["book_id", "state", "code"], schema=SCHEMA)
    op.create_index(
        "coupons_holder_code",
        "coupons",
        ["user_id", "code"],
        schema=SCHEMA,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_index(
        "coupons_locked_by_book",
        "coupons",
        ["book_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("lock_expires_at IS NOT NULL"),
    )
    op.create_table(
        "holdings",
        sa.Column("book_id", postgresql.UUID, primary_key=True),
        sa.Column("user_id", postgresql.UUID, primary_key=True),
        sa.Column("held", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("held >= 0", name="holdings_held_not_negative"),
        schema=SCHEMA,
    )
    op.create_table(
        "history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("book_id", postgresql.UUID, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("user_id", postgresql.UUID),
        sa.Column("actor_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False, server_default=""),
        sa.Column("distribution_id", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("history_code_id", "history", ["code", "id"], schema=SCHEMA)
    op.create_index("history_book_id", "history", ["book_id", "id"], schema=SCHEMA)
    create_table(SCHEMA)


def downgrade() -> None:
    for table in ("idempotency_keys", "history", "holdings", "coupons", "book_rules"):
        op.drop_table(table, schema=SCHEMA)
