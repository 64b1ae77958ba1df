"""Users, refresh tokens, login throttle and idempotency keys.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from kernel.idempotency import create_table

revision = "0001"
down_revision = None
SCHEMA = "auth"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", postgresql.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("role IN ('USER', 'ADMIN')", name="users_role_known"),
        schema=SCHEMA,
    )
    # Emails are unique whatever their letter case.
    op.create_index("users_email_key", "users", [sa.text("lower(email)")], unique=True, schema=SCHEMA)
    op.create_index("users_created_at_id", "users", ["created_at", "id"], schema=SCHEMA)
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary, primary_key=True),
        sa.Column("user_id", postgresql.UUID, sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("family_id", postgresql.UUID, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_index("refresh_tokens_family", "refresh_tokens", ["family_id"], schema=SCHEMA)
    op.create_index("refresh_tokens_user", "refresh_tokens", ["user_id"], schema=SCHEMA)
    op.create_table(
        "login_throttle",
        sa.Column("email_key", sa.Text, primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    create_table(SCHEMA)


def downgrade() -> None:
    for table in ("idempotency_keys", "login_throttle", "refresh_tokens", "users"):
        op.drop_table(table, schema=SCHEMA)
