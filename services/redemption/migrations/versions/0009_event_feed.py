"""The ledger's history is its outbox: every transition already appends one history row in its own
transaction, so the event feed (coupons.events.v1.EventFeedService) reads history through a view.

`txid` records the writing transaction, so a reader can take only rows of finished transactions
(kernel/event_feed.py); existing rows get this migration's id, which orders them before any later one.

Revision ID: 0009
"""

from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE redemption.history ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
        CREATE INDEX history_by_txid ON redemption.history (txid, id);
        CREATE VIEW redemption.event_feed AS
        SELECT id, txid,
               'coupon.' || lower(left(event, -length('_EVENT'))) AS type,
               created_at AS occurred_at,
               'coupon' AS subject_type,
               code AS subject_id,
               book_id,
               actor_id AS actor,
               request_id,
               'coupons.events.coupon.v1' AS data_schema,
               jsonb_strip_nulls(jsonb_build_object(
                   'code', code, 'book_id', book_id, 'user_id', user_id,
                   'distribution_id', nullif(distribution_id, ''),
                   'order_reference', nullif(order_reference, ''),
                   'order_amount', order_amount::text, 'discount', discount::text,
                   'currency', nullif(currency, ''), 'reason', nullif(reason, ''),
                   'undoes', 'redemption-' || undoes
               )) AS data
        FROM redemption.history;
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP VIEW redemption.event_feed; DROP INDEX redemption.history_by_txid;"
        " ALTER TABLE redemption.history DROP COLUMN txid"
    )
