"""Discounts, redeem with an order, and validation: one function answers both redeem and validate.

A book says what its codes give (a percentage or a fixed amount in its currency, an optional maximum
discount and minimum order amount). redemption.redeem redeems a personal or a shared code with an optional
order (reference, amount, currency): the checks are redemption.redeem_verdict, the discount
redemption.discount_of, and history records order and discount. With p_validate it answers the same verdict
and discount and changes nothing: no lock (never busy, never waiting), no history, no stored answer.
redeem_shared (0006) is folded into redeem; change_code keeps lock, unlock and assign, without 0006's
arguments for shared redeems (change_coupon's REDEEM branch is no longer called).

Revision ID: 0007
"""

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
SCHEMA = "redemption"

_shared = importlib.import_module("services.redemption.migrations.versions.0006_shared_codes")
REDEEM_SHARED_0006 = next(f for f in _shared.FUNCTIONS if "FUNCTION redemption.redeem_shared(" in f)
CHANGE_CODE_0006 = next(f for f in _shared.FUNCTIONS if "FUNCTION redemption.change_code(" in f)

CHANGE_CODE_ARGS_0006 = "text, text, bigint, uuid, uuid, uuid, text, text, text, bytea, uuid, integer"
DISCOUNT_TYPES = "discount_type IN ('', 'PERCENTAGE', 'FIXED_AMOUNT')"

FUNCTIONS = [
    # Why this coupon may not be redeemed now by this caller for this order ('' when it may), in the order
    # the API documents: the book, the coupon (shared: caps; personal: holder's uses, lock), the order.
    """
CREATE FUNCTION redemption.redeem_verdict(
    c redemption.coupons, r redemption.book_rules, p_lock_id uuid, p_used integer, p_amount numeric, p_currency text
) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN redemption.book_refusal(r) <> '' THEN redemption.book_refusal(r)
        WHEN c.shared AND p_lock_id IS NOT NULL THEN 'COUPON_SHARED'
        WHEN c.shared AND c.redemption_count >= r.max_redemptions_total THEN 'SHARED_LIMIT_REACHED'
        WHEN c.shared AND p_used >= r.max_redemptions THEN 'USER_LIMIT_REACHED'
        WHEN NOT c.shared AND c.state = 'AVAILABLE' THEN 'COUPON_NOT_ASSIGNED'
        WHEN NOT c.shared AND c.redemption_count >= r.max_redemptions THEN 'NO_REDEMPTIONS_LEFT'
        WHEN NOT c.shared AND coalesce(c.lock_expires_at > now(), false) AND p_lock_id IS NULL THEN 'COUPON_LOCKED'
        WHEN NOT c.shared AND coalesce(c.lock_expires_at > now(), false) AND p_lock_id <> c.lock_id
            THEN 'WRONG_LOCK_ID'
        WHEN p_amount IS NOT NULL AND r.currency <> '' AND p_currency <> r.currency THEN 'CURRENCY_MISMATCH'
        WHEN p_amount IS NULL AND r.min_order_amount IS NOT NULL THEN 'ORDER_AMOUNT_REQUIRED'
        WHEN p_amount < r.min_order_amount THEN 'ORDER_BELOW_MINIMUM'
        ELSE '' END
$$""",
    # What the book's discount takes off an order of p_amount (NULL without an order amount or a discount):
    # a percentage rounded half away from zero to the currency's minor unit (p_exponent decimals), at most
    # max_discount, never more than the order.
    """
CREATE FUNCTION redemption.discount_of(r redemption.book_rules, p_amount numeric, p_exponent integer)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_amount IS NULL OR r.discount_type = '' THEN NULL ELSE least(
        CASE r.discount_type WHEN 'PERCENTAGE' THEN round(p_amount * r.percent_off / 100, p_exponent)
            ELSE r.amount_off END,
        r.max_discount, p_amount) END
$$""",
    """
CREATE FUNCTION redemption.redeem(
    p_code text, p_key bigint, p_holder uuid, p_caller uuid, p_lock_id uuid, p_actor text, p_scope text,
    p_request_id text, p_hash bytea, p_wait_ms integer, p_validate boolean,
    p_order_reference text, p_order_amount numeric, p_currency text, p_exponent integer
) RETURNS redemption.outcome LANGUAGE plpgsql AS $$
DECLARE
    c redemption.coupons;
    r redemption.book_rules;
    o redemption.outcome;
    is_shared boolean;
    verdict text;
    used integer := 0;
    off numeric;
BEGIN
    is_shared := coalesce((SELECT x.shared FROM redemption.coupons x WHERE x.code = p_code), false);
    IF p_validate THEN
        NULL;  -- reads the last committed state without waiting for anyone
    ELSIF is_shared THEN
        -- A hot shared code: every caller queues for its turn (bounded: lock_timeout raises 55P03, busy).
        PERFORM set_config('lock_timeout', p_wait_ms::text, true);
        PERFORM pg_advisory_xact_lock(p_key);
    ELSIF NOT pg_try_advisory_xact_lock(p_key) THEN
        SELECT * INTO c FROM redemption.coupons WHERE code = p_code;
        o.code := p_code;
        o.outcome := CASE WHEN c.code IS NULL OR (p_holder IS NOT NULL AND c.user_id IS DISTINCT FROM p_holder)
            THEN 'COUPON_NOT_FOUND' ELSE 'BUSY' END;
        RETURN o;
    END IF;
    IF p_request_id <> '' AND NOT p_validate THEN
        o := redemption.replay(p_scope, p_request_id, p_hash);
        IF o.outcome IS NOT NULL THEN
            RETURN o;
        END IF;
    END IF;
    -- A shared code's reads take no row lock: its advisory lock serializes its changes, and a refusal
    -- then writes nothing at all (no commit to flush), which keeps a code past its cap cheap to ask.
    IF is_shared OR p_validate THEN
        SELECT * INTO c FROM redemption.coupons WHERE code = p_code;
    ELSE
        SELECT * INTO c FROM redemption.coupons WHERE code = p_code FOR UPDATE;
    END IF;
    IF NOT FOUND OR (NOT is_shared AND p_holder IS NOT NULL AND c.user_id IS DISTINCT FROM p_holder) THEN
        o.code := p_code;
        o.outcome := 'COUPON_NOT_FOUND';
        RETURN o;
    END IF;
    SELECT * INTO r FROM redemption.book_rules WHERE book_id = c.book_id;
    IF is_shared THEN
        used := coalesce((SELECT s.redemptions FROM redemption.shared_redemptions s
            WHERE s.code = p_code AND s.user_id = p_caller), 0);
    END IF;
    verdict := redemption.redeem_verdict(c, r, p_lock_id, used, p_order_amount, p_currency);
    off := redemption.discount_of(r, p_order_amount, p_exponent);
    IF verdict <> '' OR p_validate THEN
        o := redemption.outcome_of(CASE WHEN verdict = '' THEN 'OK' ELSE verdict END, c, r);
        o.user_redemptions := used;
        o.discount := off;
        RETURN o;  -- nothing was written
    END IF;
    IF NOT is_shared AND c.lock_expires_at IS NOT NULL AND c.lock_expires_at <= now() THEN
        INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id)
            VALUES (c.code, c.book_id, 'LOCK_EXPIRED_EVENT', c.user_id, p_actor, p_request_id);
    END IF;
    IF is_shared THEN
        INSERT INTO redemption.shared_redemptions AS s (code, user_id, redemptions) VALUES (p_code, p_caller, 1)
            ON CONFLICT (code, user_id) DO UPDATE SET redemptions = s.redemptions + 1;
    END IF;
    UPDATE redemption.coupons SET redemption_count = redemption_count + 1, last_redeemed_at = now(),
        lock_id = NULL, lock_expires_at = NULL,
        state = CASE WHEN redemption_count + 1 >= (CASE WHEN is_shared THEN r.max_redemptions_total
            ELSE r.max_redemptions END) THEN 'REDEEMED' WHEN is_shared THEN 'AVAILABLE' ELSE 'ASSIGNED' END
        WHERE code = p_code RETURNING * INTO c;
    INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id,
            order_reference, order_amount, discount, currency)
        VALUES (c.code, c.book_id, 'REDEEMED_EVENT', CASE WHEN is_shared THEN p_caller ELSE c.user_id END, p_actor,
            p_request_id, p_order_reference, p_order_amount, off,
            CASE WHEN p_order_amount IS NULL THEN '' ELSE p_currency END);
    o := redemption.outcome_of('OK', c, r);
    o.user_redemptions := used + CASE WHEN is_shared THEN 1 ELSE 0 END;
    o.discount := off;
    IF p_request_id <> '' THEN
        PERFORM redemption.remember(p_scope, p_request_id, p_hash, o);
    END IF;
    RETURN o;
END
$$""",
    # Lock, unlock and assign: a personal code's go to change_coupon, a shared code has none of them.
    """
CREATE FUNCTION redemption.change_code(
    p_op text, p_code text, p_key bigint, p_holder uuid, p_target uuid, p_lock_id uuid,
    p_actor text, p_scope text, p_request_id text, p_hash bytea
) RETURNS redemption.outcome LANGUAGE plpgsql AS $$
DECLARE
    o redemption.outcome;
BEGIN
    IF NOT coalesce((SELECT c.shared FROM redemption.coupons c WHERE c.code = p_code), false) THEN
        RETURN redemption.change_coupon(
            p_op, p_code, p_key, p_holder, p_target, p_lock_id, p_actor, p_scope, p_request_id, p_hash);
    END IF;
    o.outcome := 'COUPON_SHARED';
    o.code := p_code;
    o.shared := true;
    RETURN o;
END
$$""",
]

# outcome_of as 0006 has it, plus what a discount's answers and refusals need.
OUTCOME_OF = """
CREATE OR REPLACE FUNCTION redemption.outcome_of(verdict text, c redemption.coupons, r redemption.book_rules)
RETURNS redemption.outcome LANGUAGE sql STABLE AS $$
    SELECT ROW(verdict, c.code, c.book_id::text, c.state, c.user_id::text, c.lock_id::text, c.lock_expires_at,
        coalesce(c.lock_expires_at > now(), false), c.redemption_count,
        CASE WHEN c.shared THEN r.max_redemptions_total ELSE r.max_redemptions END, c.assigned_at,
        c.last_redeemed_at, r.valid_from, r.valid_until, NULL, r.max_assignments_per_user, NULL,
        c.shared, NULL, r.max_redemptions, NULL, r.currency, r.min_order_amount
    )::redemption.outcome
$$"""


def upgrade() -> None:
    for name, kind in (
        ("percent_off", sa.Numeric(5, 2)),
        ("amount_off", sa.Numeric),
        ("max_discount", sa.Numeric),
        ("min_order_amount", sa.Numeric),
    ):
        op.add_column("book_rules", sa.Column(name, kind), schema=SCHEMA)
    op.add_column("book_rules", sa.Column("discount_type", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.add_column("book_rules", sa.Column("currency", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.create_check_constraint("book_rules_discount_type_known", "book_rules", DISCOUNT_TYPES, schema=SCHEMA)
    op.add_column("history", sa.Column("order_reference", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.add_column("history", sa.Column("order_amount", sa.Numeric), schema=SCHEMA)
    op.add_column("history", sa.Column("discount", sa.Numeric), schema=SCHEMA)
    op.add_column("history", sa.Column("currency", sa.Text, nullable=False, server_default=""), schema=SCHEMA)
    op.execute(
        "ALTER TYPE redemption.outcome ADD ATTRIBUTE discount numeric, ADD ATTRIBUTE currency text, "
        "ADD ATTRIBUTE min_order_amount numeric"
    )
    op.execute(OUTCOME_OF)
    op.execute("DROP FUNCTION redemption.redeem_shared(text, bigint, uuid, text, text, text, bytea, integer)")
    op.execute(f"DROP FUNCTION redemption.change_code({CHANGE_CODE_ARGS_0006})")
    for function in FUNCTIONS:
        op.execute(function)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION redemption.redeem(text, bigint, uuid, uuid, uuid, text, text, text, bytea, integer, boolean, "
        "text, numeric, text, integer)"
    )
    op.execute("DROP FUNCTION redemption.discount_of(redemption.book_rules, numeric, integer)")
    op.execute(
        "DROP FUNCTION redemption.redeem_verdict(redemption.coupons, redemption.book_rules, uuid, integer, numeric, "
        "text)"
    )
    op.execute(REDEEM_SHARED_0006)
    op.execute("DROP FUNCTION redemption.change_code(text, text, bigint, uuid, uuid, uuid, text, text, text, bytea)")
    op.execute(CHANGE_CODE_0006)
    op.execute(
        "ALTER TYPE redemption.outcome DROP ATTRIBUTE discount, DROP ATTRIBUTE currency, "
        "DROP ATTRIBUTE min_order_amount"
    )
    op.execute(next(f for f in _shared.FUNCTIONS if "FUNCTION redemption.outcome_of(" in f))
    for name in ("currency", "discount", "order_amount", "order_reference"):
        op.drop_column("history", name, schema=SCHEMA)
    op.drop_constraint("book_rules_discount_type_known", "book_rules", schema=SCHEMA)
    for name in ("currency", "discount_type", "min_order_amount", "max_discount", "amount_off", "percent_off"):
        op.drop_column("book_rules", name, schema=SCHEMA)
