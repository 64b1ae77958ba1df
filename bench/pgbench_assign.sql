-- One random assignment, as services/redemption/repository.py runs it for RedemptionDomain.assign_random
-- (a user claiming a code of a self-claim book, no request_id): one call of redemption.assign_random
-- (migration 0004) in autocommit: the book's rules, a uniformly random AVAILABLE code through the partial
-- index (FOR UPDATE SKIP LOCKED), the holding reserved, the code assigned, its history appended.
-- Run with -M prepared, as the service does.
--
-- Variables (-D): book (a book id with allow_self_claim on, max_assignments_per_user 0 and more AVAILABLE
-- codes than the run assigns), run (this run's number). Each client is its own user, as each gRPC caller
-- is: a user id made of the run and the client number (the ledger does not look users up).
\set user_number :run * 1000 + :client_id
SELECT * FROM redemption.assign_random(:book::uuid,
    ('00000000-0000-4000-8000-' || lpad(:user_number::text, 12, '0'))::uuid, true, random(),
    '00000000-0000-4000-8000-' || lpad(:user_number::text, 12, '0'),
    'AssignRandomCoupon:00000000-0000-4000-8000-' || lpad(:user_number::text, 12, '0'), '', ''::bytea);
