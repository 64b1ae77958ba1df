"""Rollback: undo one redemption of a code (by its order reference) within the book's rollback window.

redemption.rollback waits for the code's advisory lock like a shared redeem (bounded by lock_timeout), so
it serializes with every redeem and every other rollback of the code; it finds the latest redemption of
that order not yet undone, takes one off the coupon's count (and the user's, for a shared code), re-states
the coupon (REDEEMED only with no use left) and appends ROLLED_BACK_EVENT naming the redemption it undoes
(`undoes`, unique: a redemption is undone at most once). Idempotent by request id like every change.

Revision ID: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
SCHEMA = "redemption"
DEFAULT_WINDOW_SECONDS = 7 * 24 * 3600

ROLLBACK = """
CREATE FUNCTION redemption.rollback(
    p_code text, p_key bigint, p_order_reference text, p_reason text, p_actor text, p_scope text,
    p_request_id text, p_hash bytea, p_wait_ms integer
) RETURNS redemption.outcome LANGUAGE plpgsql AS $$
DECLARE
    c redemption.coupons;
    r redemption.book_rules;
    o redemption.outcome;
    redeemed redemption.history;
BEGIN
    PERFORM set_config('lock_timeout', p_wait_ms::text, true);
    PERFORM pg_advisory_xact_lock(p_key);
    IF p_request_id <> '' THEN
        o := redemption.replay(p_scope, p_request_id, p_hash);
        IF o.outcome IS NOT NULL THEN
            RETURN o;
        END IF;
    END IF;
    SELECT * INTO c FROM redemption.coupons WHERE code = p_code FOR UPDATE;
    IF NOT FOUND THEN
        o.code := p_code;
        o.outcome := 'COUPON_NOT_FOUND';
        RETURN o;
    END IF;
    SELECT * INTO r FROM redemption.book_rules WHERE book_id = c.book_id;
    SELECT h.* INTO redeemed FROM redemption.history h
        WHERE h.code = p_code AND h.event = 'REDEEMED_EVENT' AND h.order_reference = p_order_reference
            AND NOT EXISTS (SELECT 1 FROM redemption.history u WHERE u.undoes = h.id)
        ORDER BY h.id DESC LIMIT 1;
    o := redemption.outcome_of(CASE
        WHEN redeemed.id IS NOT NULL THEN CASE
            WHEN redeemed.created_at + make_interval(secs => r.rollback_window_seconds) < now()
                THEN 'ROLLBACK_WINDOW_PASSED' ELSE 'OK' END
        WHEN EXISTS (SELECT 1 FROM redemption.history h WHERE h.code = p_code AND h.event = 'REDEEMED_EVENT'
                AND h.order_reference = p_order_reference) THEN 'ALREADY_ROLLED_BACK'
        ELSE 'REDEMPTION_NOT_FOUND' END, c, r);
    IF o.outcome <> 'OK' THEN
        o.last_redeemed_at := redeemed.created_at;  -- when the redemption was, for the window's message
        RETURN o;  -- nothing was written
    END IF;
    IF c.shared THEN
        UPDATE redemption.shared_redemptions SET redemptions = redemptions - 1
            WHERE code = p_code AND user_id = redeemed.user_id;
    END IF;
    UPDATE redemption.coupons SET redemption_count = redemption_count - 1,
        state = CASE WHEN redemption_count - 1 >= (CASE WHEN c.shared THEN r.max_redemptions_total
            ELSE r.max_redemptions END) THEN 'REDEEMED' WHEN c.shared THEN 'AVAILABLE' ELSE 'ASSIGNED' END
        WHERE code = p_code RETURNING * INTO c;
    INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id, order_reference,
            order_amount, discount, currency, reason, undoes)
        VALUES (c.code, c.book_id, 'ROLLED_BACK_EVENT', redeemed.user_id, p_actor, p_request_id,
            redeemed.order_reference, redeemed.order_amount, redeemed.discount, redeemed.currency, p_reason,
            redeemed.id);
    o := redemption.outcome_of('OK', c, r);
    o.discount := redeemed.discount;
    IF p_request_id <> '' THEN
        PERFORM redemption.remember(p_scope, p_request_id, p_hash, o);
    END IF;
    RETURN o;
END
$$"""


def upgrade() -> None:
    op.add_column(
        "book_rules",
        sa.Column("rollback_window_seconds", sa.Integer, nullable=False, server_default=str(DEFAULT_WINDOW_SECONDS)),
        schema=SCHEMA,
    )
    op.add_column("history", sa.Column("reason", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.add_column("history", sa.Column("undoes", sa.BigInteger), schema=SCHEMA)
    op.create_index(
        "history_undoes",
        "history",
        ["undoes"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("undoes IS NOT NULL"),
    )
    op.create_index(
        "history_code_order",
        "history",
        ["code", "order_reference"],
        schema=SCHEMA,
        postgresql_where=sa.text("order_reference <> ''"),
    )
    op.execute(ROLLBACK)


def downgrade() -> None:
    op.execute("DROP FUNCTION redemption.rollback(text, bigint, text, text, text, text, text, bytea, integer)")
    op.drop_index("history_code_order", "history", schema=SCHEMA)
    op.drop_index("history_undoes", "history", schema=SCHEMA)
    op.drop_column("history", "undoes", schema=SCHEMA)
    op.drop_column("history", "reason", schema=SCHEMA)
    op.drop_column("book_rules", "rollback_window_seconds", schema=SCHEMA)
