"""The hot path: each single-coupon change and each random assignment is one server-side function call.

One round trip in autocommit: the function takes the transaction-scoped advisory lock, replays or refuses
a request id, checks the book and the coupon, writes the change and its history, and remembers the answer,
all in the statement's own transaction. A refusal writes nothing and names its reason; the words for it
are Python's (services/redemption/rules.py). Idempotent answers of these operations are stored as the
function's outcome row (JSON); earlier answers are converted here, so a retry across the upgrade replays.

Revision ID: 0004
"""

from alembic import op

from kernel.idempotency import RETENTION

revision = "0004"
down_revision = "0003"

# The scopes (method names) whose stored answers change shape; a scope is "<method>:<caller>".
HOT_SCOPES = ("LockCoupon", "UnlockCoupon", "RedeemCoupon", "AssignCoupon", "AssignRandomCoupon")
SCOPE_PATTERN = "^(" + "|".join(HOT_SCOPES) + "):"

OUTCOME = """
CREATE TYPE redemption.outcome AS (
    outcome text,  -- OK, or the reason for refusing (see rules.py)
    code text, book_id text, state text, user_id text, lock_id text, lock_expires_at timestamptz,
    locked boolean, redemption_count integer, max_redemptions integer, assigned_at timestamptz,
    last_redeemed_at timestamptz,
    valid_from timestamptz, valid_until timestamptz,  -- the book's window, for BOOK_* refusals
    held integer, assignment_limit integer,  -- for ASSIGNMENT_LIMIT_REACHED
    available bigint  -- for NO_CODES_AVAILABLE and a book busy with concurrent picks
)"""

FUNCTIONS = [
    # Why the book refuses changes now ('' while open): the one definition, read by every change.
    """
CREATE FUNCTION redemption.book_refusal(r redemption.book_rules) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.archived THEN 'BOOK_ARCHIVED'
        WHEN r.valid_from IS NOT NULL AND now() < r.valid_from THEN 'BOOK_NOT_YET_VALID'
        WHEN r.valid_until IS NOT NULL AND now() >= r.valid_until THEN 'BOOK_EXPIRED'
        ELSE '' END
$$""",
    """
CREATE FUNCTION redemption.outcome_of(verdict text, c redemption.coupons, r redemption.book_rules)
RETURNS redemption.outcome LANGUAGE sql STABLE AS $$
    SELECT ROW(verdict, c.code, c.book_id::text, c.state, c.user_id::text, c.lock_id::text, c.lock_expires_at,
        coalesce(c.lock_expires_at > now(), false), c.redemption_count, r.max_redemptions, c.assigned_at,
        c.last_redeemed_at, r.valid_from, r.valid_until, NULL, r.max_assignments_per_user, NULL
    )::redemption.outcome
$$""",
    # The stored answer of an earlier call with this request id: NULL for a new id, REQUEST_ID_REUSED when
    # the id came with other arguments.
    f"""
CREATE FUNCTION redemption.replay(p_scope text, p_request_id text, p_hash bytea)
RETURNS redemption.outcome LANGUAGE plpgsql STABLE AS $$
DECLARE
    k record;
    o redemption.outcome;
BEGIN
    SELECT request_hash, response INTO k FROM redemption.idempotency_keys
        WHERE scope = p_scope AND request_id = p_request_id AND created_at >= now() - interval '{RETENTION}';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF k.request_hash <> p_hash THEN
        o.outcome := 'REQUEST_ID_REUSED';
        RETURN o;
    END IF;
    RETURN jsonb_populate_record(NULL::redemption.outcome, convert_from(k.response, 'UTF8')::jsonb);
END
$$""",
    # Keeps the answer; a key another transaction took meanwhile (same id, committed first) undoes this
    # whole call (SQLSTATE CB409), and the caller asks again to get that answer or REQUEST_ID_REUSED.
    f"""
CREATE FUNCTION redemption.remember(p_scope text, p_request_id text, p_hash bytea, o redemption.outcome)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO redemption.idempotency_keys AS k (scope, request_id, request_hash, response)
        VALUES (p_scope, p_request_id, p_hash, convert_to(to_jsonb(o)::text, 'UTF8'))
        ON CONFLICT (scope, request_id) DO UPDATE
        SET request_hash = excluded.request_hash, response = excluded.response, created_at = now()
        WHERE k.created_at < now() - interval '{RETENTION}';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'request id % was taken by a concurrent call', p_request_id USING ERRCODE = 'CB409';
    END IF;
END
$$""",
    # Counts one more code into the user's holding unless it passes the book's limit (0: none): one
    # conditional upsert, never count-then-insert. The holding now, or NULL when the limit refuses.
    """
CREATE FUNCTION redemption.reserve_one(p_book uuid, p_user uuid, p_limit integer)
RETURNS integer LANGUAGE sql AS $$
    INSERT INTO redemption.holdings AS h (book_id, user_id, held) VALUES (p_book, p_user, 1)
        ON CONFLICT (book_id, user_id) DO UPDATE SET held = h.held + 1 WHERE p_limit = 0 OR h.held + 1 <= p_limit
        RETURNING held
$$""",
    # LOCK, UNLOCK, REDEEM or ASSIGN one coupon. p_holder: the caller's user id, NULL for an admin (a user
    # learns only COUPON_NOT_FOUND about codes that are not theirs, busy or not).
    """
CREATE FUNCTION redemption.change_coupon(
    p_op text, p_code text, p_key bigint, p_holder uuid, p_target uuid, p_lock_id uuid,
    p_actor text, p_scope text, p_request_id text, p_hash bytea
) RETURNS redemption.outcome LANGUAGE plpgsql AS $$
DECLARE
    c redemption.coupons;
    r redemption.book_rules;
    o redemption.outcome;
    live boolean;
    verdict text := '';
    held integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(p_key) THEN
        SELECT * INTO c FROM redemption.coupons WHERE code = p_code;
        o.code := p_code;
        o.outcome := CASE WHEN c.code IS NULL OR (p_holder IS NOT NULL AND c.user_id IS DISTINCT FROM p_holder)
            THEN 'COUPON_NOT_FOUND' ELSE 'BUSY' END;
        RETURN o;
    END IF;
    IF p_request_id <> '' THEN
        o := redemption.replay(p_scope, p_request_id, p_hash);
        IF o.outcome IS NOT NULL THEN
            RETURN o;
        END IF;
    END IF;
    SELECT * INTO c FROM redemption.coupons WHERE code = p_code FOR UPDATE;
    IF NOT FOUND OR (p_holder IS NOT NULL AND c.user_id IS DISTINCT FROM p_holder) THEN
        o.code := p_code;
        o.outcome := 'COUPON_NOT_FOUND';
        RETURN o;
    END IF;
    SELECT * INTO r FROM redemption.book_rules WHERE book_id = c.book_id;
    live := coalesce(c.lock_expires_at > now(), false);
    IF p_op <> 'UNLOCK' THEN
        verdict := redemption.book_refusal(r);
    END IF;
    IF verdict = '' THEN
        verdict := CASE p_op
            WHEN 'ASSIGN' THEN CASE WHEN c.state <> 'AVAILABLE' THEN 'COUPON_NOT_AVAILABLE' ELSE '' END
            WHEN 'UNLOCK' THEN CASE WHEN NOT live THEN 'COUPON_NOT_LOCKED' ELSE '' END
            WHEN 'LOCK' THEN CASE
                WHEN c.state = 'AVAILABLE' THEN 'COUPON_NOT_ASSIGNED'
                WHEN live THEN 'COUPON_ALREADY_LOCKED'
                WHEN c.redemption_count >= r.max_redemptions THEN 'NO_REDEMPTIONS_LEFT'
                ELSE '' END
            WHEN 'REDEEM' THEN CASE
                WHEN c.state = 'AVAILABLE' THEN 'COUPON_NOT_ASSIGNED'
                WHEN c.redemption_count >= r.max_redemptions THEN 'NO_REDEMPTIONS_LEFT'
                WHEN live AND p_lock_id IS NULL THEN 'COUPON_LOCKED'
                WHEN live AND p_lock_id <> c.lock_id THEN 'WRONG_LOCK_ID'
                ELSE '' END
            END;
    END IF;
    IF verdict = '' AND p_op = 'ASSIGN' THEN
        held := redemption.reserve_one(c.book_id, p_target, r.max_assignments_per_user);
        IF held IS NULL THEN
            verdict := 'ASSIGNMENT_LIMIT_REACHED';
            c.user_id := p_target;  -- whose limit it is, for the message
        END IF;
    END IF;
    IF verdict <> '' THEN
        o := redemption.outcome_of(verdict, c, r);
        IF verdict = 'ASSIGNMENT_LIMIT_REACHED' THEN
            o.held := (SELECT h.held FROM redemption.holdings h WHERE h.book_id = c.book_id AND h.user_id = p_target);
        END IF;
        RETURN o;  -- nothing was written
    END IF;
    IF c.lock_expires_at IS NOT NULL AND NOT live THEN  -- the change ends an expired lock: say so in history
        INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id)
            VALUES (c.code, c.book_id, 'LOCK_EXPIRED_EVENT', c.user_id, p_actor, p_request_id);
    END IF;
    CASE p_op
        WHEN 'REDEEM' THEN
            UPDATE redemption.coupons SET state = 'REDEEMED', redemption_count = redemption_count + 1,
                last_redeemed_at = now(), lock_id = NULL, lock_expires_at = NULL
                WHERE code = p_code RETURNING * INTO c;
        WHEN 'LOCK' THEN
            UPDATE redemption.coupons SET lock_id = p_lock_id,
                lock_expires_at = now() + make_interval(secs => r.lock_ttl_seconds)
                WHERE code = p_code RETURNING * INTO c;
        WHEN 'UNLOCK' THEN
            UPDATE redemption.coupons SET lock_id = NULL, lock_expires_at = NULL
                WHERE code = p_code RETURNING * INTO c;
        WHEN 'ASSIGN' THEN
            UPDATE redemption.coupons SET state = 'ASSIGNED', user_id = p_target, assigned_at = now()
                WHERE code = p_code RETURNING * INTO c;
    END CASE;
    INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id)
        VALUES (c.code, c.book_id, CASE p_op WHEN 'REDEEM' THEN 'REDEEMED_EVENT' WHEN 'LOCK' THEN 'LOCKED_EVENT'
            WHEN 'UNLOCK' THEN 'UNLOCKED_EVENT' ELSE 'ASSIGNED_EVENT' END, c.user_id, p_actor, p_request_id);
    o := redemption.outcome_of('OK', c, r);
    IF p_request_id <> '' THEN
        PERFORM redemption.remember(p_scope, p_request_id, p_hash, o);
    END IF;
    RETURN o;
END
$$""",
    # A uniformly random AVAILABLE code of the book to the user: the first key at or after p_start, wrapping
    # around (O(log n) through the partial index); SKIP LOCKED lets concurrent pickers pass each other.
    """
CREATE FUNCTION redemption.assign_random(
    p_book uuid, p_user uuid, p_self_claim boolean, p_start double precision,
    p_actor text, p_scope text, p_request_id text, p_hash bytea
) RETURNS redemption.outcome LANGUAGE plpgsql AS $$
DECLARE
    c redemption.coupons;
    r redemption.book_rules;
    o redemption.outcome;
    verdict text;
    picked text;
BEGIN
    IF p_request_id <> '' THEN
        o := redemption.replay(p_scope, p_request_id, p_hash);
        IF o.outcome IS NOT NULL THEN
            RETURN o;
        END IF;
    END IF;
    SELECT * INTO r FROM redemption.book_rules WHERE book_id = p_book;
    IF NOT FOUND THEN
        o.book_id := p_book;
        o.outcome := 'BOOK_NOT_FOUND';
        RETURN o;
    END IF;
    verdict := redemption.book_refusal(r);
    IF verdict = '' AND p_self_claim AND NOT r.allow_self_claim THEN
        verdict := 'SELF_CLAIM_NOT_ALLOWED';
    END IF;
    IF verdict = '' THEN
        SELECT code INTO picked FROM redemption.coupons
            WHERE book_id = p_book AND state = 'AVAILABLE' AND rand_key >= p_start
            ORDER BY rand_key LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF picked IS NULL THEN
            SELECT code INTO picked FROM redemption.coupons
                WHERE book_id = p_book AND state = 'AVAILABLE' AND rand_key < p_start
                ORDER BY rand_key LIMIT 1 FOR UPDATE SKIP LOCKED;
        END IF;
        IF picked IS NULL THEN  -- none free: all taken, or the rest being assigned by concurrent calls now
            o.available := (SELECT count(*) FROM redemption.coupons WHERE book_id = p_book AND state = 'AVAILABLE');
            verdict := CASE WHEN o.available > 0 THEN 'BOOK_BUSY' ELSE 'NO_CODES_AVAILABLE' END;
        END IF;
    END IF;
    IF verdict = '' THEN  -- nested: SQL does not promise to evaluate AND from left to right
        IF redemption.reserve_one(p_book, p_user, r.max_assignments_per_user) IS NULL THEN
            verdict := 'ASSIGNMENT_LIMIT_REACHED';
            o.held := (SELECT h.held FROM redemption.holdings h WHERE h.book_id = p_book AND h.user_id = p_user);
        END IF;
    END IF;
    IF verdict <> '' THEN
        o.outcome := verdict;
        o.book_id := p_book;
        o.user_id := p_user;
        o.valid_from := r.valid_from;
        o.valid_until := r.valid_until;
        o.assignment_limit := r.max_assignments_per_user;
        RETURN o;  -- nothing was written
    END IF;
    UPDATE redemption.coupons SET state = 'ASSIGNED', user_id = p_user, assigned_at = now()
        WHERE code = picked RETURNING * INTO c;
    INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id)
        VALUES (c.code, c.book_id, 'ASSIGNED_EVENT', c.user_id, p_actor, p_request_id);
    o := redemption.outcome_of('OK', c, r);
    IF p_request_id <> '' THEN
        PERFORM redemption.remember(p_scope, p_request_id, p_hash, o);
    END IF;
    RETURN o;
END
$$""",
]

# An answer stored before this revision, {"coupon": {...}, ...} or the coupon itself, as an outcome row.
CONVERT_ANSWERS = f"""
WITH old AS (
    SELECT scope, request_id, convert_from(response, 'UTF8')::jsonb AS answer FROM redemption.idempotency_keys
    WHERE scope ~ '{SCOPE_PATTERN}' AND response IS NOT NULL
), coupons AS (
    SELECT scope, request_id, answer, coalesce(answer -> 'coupon', answer) AS coupon FROM old
)
UPDATE redemption.idempotency_keys k SET response = convert_to(jsonb_build_object(
        'outcome', 'OK', 'code', c.coupon ->> 'code', 'book_id', c.coupon ->> 'book_id',
        'state', CASE WHEN c.coupon ->> 'state' = 'LOCKED' THEN 'ASSIGNED' ELSE c.coupon ->> 'state' END,
        'locked', c.coupon ->> 'state' = 'LOCKED', 'user_id', c.coupon ->> 'user_id',
        'lock_id', c.answer ->> 'lock_id', 'lock_expires_at', c.coupon ->> 'lock_expires_at',
        'redemption_count', c.coupon -> 'redemption_count', 'max_redemptions', c.coupon -> 'max_redemptions',
        'assigned_at', c.coupon ->> 'assigned_at', 'last_redeemed_at', c.coupon ->> 'last_redeemed_at'
    )::text, 'UTF8')
FROM coupons c WHERE k.scope = c.scope AND k.request_id = c.request_id AND NOT c.answer ? 'outcome'
"""

DROPPED = (
    "FUNCTION redemption.assign_random(uuid, uuid, boolean, double precision, text, text, text, bytea)",
    "FUNCTION redemption.change_coupon(text, text, bigint, uuid, uuid, uuid, text, text, text, bytea)",
    "FUNCTION redemption.reserve_one(uuid, uuid, integer)",
    "FUNCTION redemption.remember(text, text, bytea, redemption.outcome)",
    "FUNCTION redemption.replay(text, text, bytea)",
    "FUNCTION redemption.outcome_of(text, redemption.coupons, redemption.book_rules)",
    "FUNCTION redemption.book_refusal(redemption.book_rules)",
    "TYPE redemption.outcome",
)


def upgrade() -> None:
    op.execute(OUTCOME)
    for function in FUNCTIONS:
        op.execute(function)
    op.execute(CONVERT_ANSWERS)


def downgrade() -> None:
    # The earlier code cannot read outcome rows: those answers are dropped (their requests count as new).
    op.execute(f"DELETE FROM redemption.idempotency_keys WHERE scope ~ '{SCOPE_PATTERN}'")
    for name in DROPPED:
        op.execute(f"DROP {name}")
