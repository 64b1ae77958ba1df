-- One random assignment, as services/redemption/repository.py runs it for RedemptionDomain.assign_random
-- (a user claiming a code of a self-claim book, no request_id): one call of redemption.assign_random
-- (migration 0004) in autocommit: the book's rules, a uniformly random AVAILABLE code through the partial
-- index (FOR UPDATE SKIP LOCKED), the holding reserved, the code assigned, its history appended.
-- Run with -M prepared, as the service does.
--
-- Variables (-D): book (a book id with allow_self_claim on, max_assignments_per_user 0 and more AVAILABLE
-- codes than the run assigns), user (the claiming user's id, also the actor).
SELECT * FROM redemption.assign_random(:book::uuid, :user::uuid, true, random(), :user,
    'AssignRandomCoupon:' || :user, '', ''::bytea);
