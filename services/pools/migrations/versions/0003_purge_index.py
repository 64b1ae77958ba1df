"""An index on the idempotency keys' age, for the retention purge (kernel/purge.py).

Revision ID: 0003
"""

from kernel.idempotency import create_age_index, drop_age_index

revision = "0003"
down_revision = "0002"
SCHEMA = "pools"


def upgrade() -> None:
    create_age_index(SCHEMA)


def downgrade() -> None:
    drop_age_index(SCHEMA)
