-- One redeem, as services/redemption/repository.py runs it for RedemptionDomain.redeem (no request_id, no
-- lock, no order): one call of redemption.redeem (migration 0007) in autocommit, which takes the advisory
-- lock, checks the book and the coupon, updates it and appends its history in the statement's own
-- transaction. Run with -M prepared: the service prepares the call at first use on each connection.
--
-- Variables (-D): base (this run's first code number), n=0 (per-client counter, kept between
-- transactions), actor (the holder's user id: the caller the service passes as holder and actor).
-- Client c redeems the codes base + c*10000000 + 1, + 2, ... : every transaction a distinct pre-assigned
-- code (numeric text). The advisory key is pgbench's hash of the number instead of the service's sha256
-- of the code: the statement is the same, and the key only has to be distinct per code.
\set n :n + 1
\set code :base + :client_id * 10000000 + :n
\set key hash(:code)
SELECT * FROM redemption.redeem(:code::text, :key, :actor::uuid, :actor::uuid, NULL, :actor,
    'RedeemCoupon:' || :actor, '', ''::bytea, 5000, false, '', NULL, '', 2);
