"""Shared codes: a book kind whose codes have no holder; any signed-in user redeems one, up to the code's
global cap (book_rules.max_redemptions_total) and a per-user cap (book_rules.max_redemptions).

A hot shared code is not refused for being busy: redemption.redeem_shared waits for the code's advisory
lock (transaction-scoped, bounded by lock_timeout) where a personal code's try-lock answers BUSY, so every
caller within the caps gets their turn (docs/architecture.md, "Shared codes"). Per-user counts are
rows of shared_redemptions. redemption.change_code routes a call to change_coupon (personal codes, as
before) or redeem_shared; random assignment refuses shared books.

Revision ID: 0006
"""

import importlib

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
SCHEMA = "redemption"

_hot_path = importlib.import_module("services.redemption.migrations.versions.0004_hot_path")
OUTCOME_OF_0004 = next(f for f in _hot_path.FUNCTIONS if "FUNCTION redemption.outcome_of(" in f)
ASSIGN_RANDOM_0004 = next(f for f in _hot_path.FUNCTIONS if "FUNCTION redemption.assign_random(" in f)
BOOK_CHECK_0004 = "verdict := redemption.book_refusal(r);"
BOOK_CHECK_0006 = "verdict := CASE WHEN r.shared THEN 'BOOK_SHARED' ELSE redemption.book_refusal(r) END;"
if ASSIGN_RANDOM_0004.count(BOOK_CHECK_0004) != 1:  # the one check this revision replaces
    raise LookupError("migration 0004's assign_random no longer holds its book check")

HOLDER_RULE_0001 = "(state = 'AVAILABLE') = (user_id IS NULL)"
HOLDER_RULE_0006 = f"""CASE WHEN shared THEN user_id IS NULL AND state IN ('AVAILABLE', 'REDEEMED')
    ELSE {HOLDER_RULE_0001} END"""

FUNCTIONS = [
    # A shared coupon's cap is the book's max_redemptions_total; a personal one's the per-user limit.
    """
CREATE OR REPLACE FUNCTION redemption.outcome_of(verdict text, c redemption.coupons, r redemption.book_rules)
RETURNS redemption.outcome LANGUAGE sql STABLE AS $$
    SELECT ROW(verdict, c.code, c.book_id::text, c.state, c.user_id::text, c.lock_id::text, c.lock_expires_at,
        coalesce(c.lock_expires_at > now(), false), c.redemption_count,
        CASE WHEN c.shared THEN r.max_redemptions_total ELSE r.max_redemptions END, c.assigned_at,
        c.last_redeemed_at, r.valid_from, r.valid_until, NULL, r.max_assignments_per_user, NULL,
        c.shared, NULL, r.max_redemptions
    )::redemption.outcome
$$""",
    # p_user redeems the shared code once more, within the code's global cap and their own.
    """
CREATE FUNCTION redemption.redeem_shared(
    p_code text, p_key bigint, p_user uuid, p_actor text, p_scope text, p_request_id text, p_hash bytea,
    p_wait_ms integer
) RETURNS redemption.outcome LANGUAGE plpgsql AS $$
DECLARE
    c redemption.coupons;
    r redemption.book_rules;
    o redemption.outcome;
    verdict text;
    used integer;
BEGIN
    -- Every caller queues for its turn on the code (bounded: lock_timeout raises 55P03, read as BUSY).
    PERFORM set_config('lock_timeout', p_wait_ms::text, true);
    PERFORM pg_advisory_xact_lock(p_key);
    IF p_request_id <> '' THEN
        o := redemption.replay(p_scope, p_request_id, p_hash);
        IF o.outcome IS NOT NULL THEN
            RETURN o;
        END IF;
    END IF;
    -- No FOR UPDATE: the advisory lock serializes this code's changes, and a refusal then writes nothing
    -- at all (no row lock, no commit to flush), which keeps a code past its cap cheap to ask.
    SELECT * INTO c FROM redemption.coupons WHERE code = p_code;
    SELECT * INTO r FROM redemption.book_rules WHERE book_id = c.book_id;
    used := coalesce(
        (SELECT s.redemptions FROM redemption.shared_redemptions s WHERE s.code = p_code AND s.user_id = p_user), 0);
    verdict := redemption.book_refusal(r);
    IF verdict = '' THEN
        verdict := CASE WHEN c.redemption_count >= r.max_redemptions_total THEN 'SHARED_LIMIT_REACHED'
            WHEN used >= r.max_redemptions THEN 'USER_LIMIT_REACHED' ELSE '' END;
    END IF;
    IF verdict <> '' THEN
        o := redemption.outcome_of(verdict, c, r);
        o.user_redemptions := used;
        RETURN o;  -- nothing was written
    END IF;
    INSERT INTO redemption.shared_redemptions AS s (code, user_id, redemptions) VALUES (p_code, p_user, 1)
        ON CONFLICT (code, user_id) DO UPDATE SET redemptions = s.redemptions + 1;
    UPDATE redemption.coupons SET redemption_count = redemption_count + 1, last_redeemed_at = now(),
        state = CASE WHEN redemption_count + 1 >= r.max_redemptions_total THEN 'REDEEMED' ELSE 'AVAILABLE' END
        WHERE code = p_code RETURNING * INTO c;
    INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id)
        VALUES (c.code, c.book_id, 'REDEEMED_EVENT', p_user, p_actor, p_request_id);
    o := redemption.outcome_of('OK', c, r);
    o.user_redemptions := used + 1;
    IF p_request_id <> '' THEN
        PERFORM redemption.remember(p_scope, p_request_id, p_hash, o);
    END IF;
    RETURN o;
END
$$""",
    # Every single-code change: a personal code's goes to change_coupon (0004/0005, unchanged), a shared
    # code is only redeemed (p_caller is the redeeming person, also for an admin), never locked or assigned.
    """
CREATE FUNCTION redemption.change_code(
    p_op text, p_code text, p_key bigint, p_holder uuid, p_target uuid, p_lock_id uuid,
    p_actor text, p_scope text, p_request_id text, p_hash bytea, p_caller uuid, p_wait_ms integer
) RETURNS redemption.outcome LANGUAGE plpgsql AS $$
DECLARE
    o redemption.outcome;
BEGIN
    IF NOT coalesce((SELECT c.shared FROM redemption.coupons c WHERE c.code = p_code), false) THEN
        RETURN redemption.change_coupon(
            p_op, p_code, p_key, p_holder, p_target, p_lock_id, p_actor, p_scope, p_request_id, p_hash);
    END IF;
    IF p_op = 'REDEEM' AND p_lock_id IS NULL THEN
        RETURN redemption.redeem_shared(p_code, p_key, p_caller, p_actor, p_scope, p_request_id, p_hash, p_wait_ms);
    END IF;
    o.outcome := 'COUPON_SHARED';
    o.code := p_code;
    o.shared := true;
    RETURN o;
END
$$""",
]


def _replace(function: str) -> str:
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.add_column(
        "book_rules", sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false()), schema=SCHEMA
    )
    op.add_column(  # the global cap of each shared code; 0 for personal books
        "book_rules", sa.Column("max_redemptions_total", sa.Integer, nullable=False, server_default="0"), schema=SCHEMA
    )
    op.create_check_constraint(
        "book_rules_shared_capped", "book_rules", "NOT shared OR max_redemptions_total >= 1", schema=SCHEMA
    )
    # The book's kind, on each code: what the holder constraint and the hot path's routing read.
    op.add_column("coupons", sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false()), schema=SCHEMA)
    op.drop_constraint("coupons_holder_iff_held", "coupons", schema=SCHEMA)
    op.create_check_constraint("coupons_holder_iff_held", "coupons", HOLDER_RULE_0006, schema=SCHEMA)
    op.create_table(
        "shared_redemptions",
        sa.Column("code", sa.Text, sa.ForeignKey(f"{SCHEMA}.coupons.code"), primary_key=True),
        sa.Column("user_id", postgresql.UUID, primary_key=True),
        sa.Column("redemptions", sa.Integer, nullable=False),
        sa.CheckConstraint("redemptions >= 0", name="shared_redemptions_not_negative"),
        schema=SCHEMA,
    )
    op.execute(
        "ALTER TYPE redemption.outcome ADD ATTRIBUTE shared boolean, ADD ATTRIBUTE user_redemptions integer, "
        "ADD ATTRIBUTE user_limit integer"
    )
    for function in FUNCTIONS:
        op.execute(function)
    op.execute(_replace(ASSIGN_RANDOM_0004.replace(BOOK_CHECK_0004, BOOK_CHECK_0006)))


def downgrade() -> None:
    # The earlier code cannot serve shared codes: they and their counts go.
    op.execute(
        "DROP FUNCTION redemption.change_code(text, text, bigint, uuid, uuid, uuid, text, text, text, bytea, "
        "uuid, integer)"
    )
    op.execute("DROP FUNCTION redemption.redeem_shared(text, bigint, uuid, text, text, text, bytea, integer)")
    op.execute(_replace(ASSIGN_RANDOM_0004))
    op.drop_table("shared_redemptions", schema=SCHEMA)
    op.execute("DELETE FROM redemption.history WHERE code IN (SELECT code FROM redemption.coupons WHERE shared)")
    op.execute("DELETE FROM redemption.coupons WHERE shared")
    op.execute(
        "ALTER TYPE redemption.outcome DROP ATTRIBUTE shared, DROP ATTRIBUTE user_redemptions, "
        "DROP ATTRIBUTE user_limit"
    )
    op.execute(_replace(OUTCOME_OF_0004))
    op.drop_constraint("coupons_holder_iff_held", "coupons", schema=SCHEMA)
    op.create_check_constraint("coupons_holder_iff_held", "coupons", HOLDER_RULE_0001, schema=SCHEMA)
    op.drop_column("coupons", "shared", schema=SCHEMA)
    op.drop_constraint("book_rules_shared_capped", "book_rules", schema=SCHEMA)
    op.drop_column("book_rules", "max_redemptions_total", schema=SCHEMA)
    op.drop_column("book_rules", "shared", schema=SCHEMA)
