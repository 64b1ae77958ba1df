"""The pools service's outbox: one row per change, written in the change's own transaction and read by
the events service through coupons.events.v1.EventFeedService (kernel/event_feed.py, docs/events.md).

Revision ID: 0004
"""

from alembic import op

from kernel.event_feed import create_outbox

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute(create_outbox("pools"))


def downgrade() -> None:
    op.execute("DROP TABLE pools.event_feed")
