-- One redeem, statement for statement as services/redemption/repository.py runs it for
-- RedemptionDomain.redeem (no request_id, no lock): BEGIN; advisory xact lock; the coupon and its
-- book's rules FOR UPDATE; the conditional UPDATE ... RETURNING with the history INSERT in the same
-- statement, joined back to the rules; COMMIT. Run with -M prepared: psycopg 3 prepares a statement on a
-- connection after its 5th use, so the service runs these as prepared statements too.
--
-- Variables (-D): base (this run's first code number), n=0 (per-client counter, kept between
-- transactions), actor (the holder's user id, the actor the service records). Client c redeems the codes
-- base + c*10000000 + 1, + 2, ... : every transaction a distinct pre-assigned code (numeric text).
-- The advisory key is pgbench's hash of the number instead of the service's sha256 of the code: the
-- statement is the same, and the key only has to be distinct per code.
\set n :n + 1
\set code :base + :client_id * 10000000 + :n
\set key hash(:code)
BEGIN;
SELECT pg_try_advisory_xact_lock(:key);
SELECT c.code, c.book_id::text AS book_id, c.state, c.user_id::text AS user_id,
    c.lock_id::text AS lock_id, c.lock_expires_at, coalesce(c.lock_expires_at > now(), false) AS locked, c.redemption_count,
    r.max_redemptions, c.assigned_at, c.last_redeemed_at, r.book_id::text AS rule_book_id, r.allow_multi_redemption AS rule_allow_multi_redemption, r.max_redemptions AS rule_max_redemptions, r.max_assignments_per_user AS rule_max_assignments_per_user, r.lock_ttl_seconds AS rule_lock_ttl_seconds, r.valid_from AS rule_valid_from, r.valid_until AS rule_valid_until, r.archived AS rule_archived, r.version AS rule_version FROM redemption.coupons c
            JOIN redemption.book_rules r USING (book_id) WHERE c.code = :code FOR UPDATE OF c
\gset row_
WITH updated AS (
                UPDATE redemption.coupons c SET state = 'REDEEMED', redemption_count = c.redemption_count + 1,
            last_redeemed_at = now(), lock_id = NULL, lock_expires_at = NULL FROM redemption.book_rules r
                WHERE c.code = :code AND r.book_id = c.book_id AND c.redemption_count < r.max_redemptions RETURNING c.*),
            logged AS (
                INSERT INTO redemption.history (code, book_id, event, user_id, actor_id, request_id, distribution_id)
                SELECT code, book_id, 'REDEEMED_EVENT', user_id, :actor, '', '' FROM updated)
            SELECT c.code, c.book_id::text AS book_id, c.state, c.user_id::text AS user_id,
    c.lock_id::text AS lock_id, c.lock_expires_at, coalesce(c.lock_expires_at > now(), false) AS locked, c.redemption_count,
    r.max_redemptions, c.assigned_at, c.last_redeemed_at FROM updated c JOIN redemption.book_rules r USING (book_id)
\gset done_
COMMIT;
