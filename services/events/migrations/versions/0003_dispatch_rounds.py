"""A dispatcher's round is one statement: record the attempts finished since the last round, settle their
deliveries, claim the next due ones (services/events/dispatcher.py). One round trip and one commit a round
instead of two transactions of SQLAlchemy statements: the webhook work per redemption is what the redeem
benchmark pays for (docs/webhooks.md).

A claim's lease gets a column of its own, in no index, on pages with room: the claim is then a HOT update
(no index entries written), where moving next_attempt_at (indexed) wrote an entry in each of five indexes.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"

# `finished` is a JSON array of the attempts' records (WebhookRepository.settle_and_claim writes it). A
# delivery whose claim ran out and was claimed again since keeps the newer claim's state (the fence:
# attempt_count); its attempt is still recorded. Each statement of a VOLATILE SQL function sees the ones
# before it: a delivery settled here is claimed again only if its next try is already due.
# Every statement touches a round's few rows by key, so the function plans nothing else: a connection
# keeps its plans, and one made while the tables were small (a new install, the benchmark's start) may
# hash-join whole tables and go on doing so as they grow (a first version of this function did: 35-73 ms
# a round in the redeem benchmark, 10 ms at 100,000 events; tests/test_webhooks.py guards against it).
SETTLE_AND_CLAIM = """
CREATE FUNCTION events.settle_and_claim(finished jsonb, claim_at timestamptz, lease_until timestamptz,
    claim_limit integer)
RETURNS TABLE (delivery_id text, endpoint_id text, url text, secret text, attempt_count integer,
    round_tries integer, seq bigint, txid_text text, source text, source_id bigint, type text,
    occurred_at timestamptz, subject_type text, subject_id text, book_id text, actor text, request_id text,
    data_schema text, data text)
LANGUAGE sql VOLATILE SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
    WITH f AS (
        SELECT * FROM jsonb_to_recordset(finished) AS f(id uuid, number integer, started_at timestamptz,
            duration_ms integer, outcome text, status_code integer, error text, state text,
            next_attempt_at timestamptz, recorded_at timestamptz)
    ), recorded AS (
        INSERT INTO events.webhook_attempts (delivery_id, number, started_at, duration_ms, outcome, status_code,
            error)
        SELECT f.id, f.number, f.started_at, f.duration_ms, f.outcome, f.status_code, f.error FROM f
        ON CONFLICT DO NOTHING
    )
    UPDATE events.webhook_deliveries d SET state = f.state, next_attempt_at = f.next_attempt_at,
        leased_until = '-infinity', last_status_code = f.status_code, last_error = f.error,
        delivered_at = CASE WHEN f.state = 'DELIVERED' THEN f.recorded_at ELSE d.delivered_at END,
        finished_at = CASE WHEN f.state <> 'PENDING' THEN f.recorded_at END
    FROM f
    WHERE d.id = f.id AND d.attempt_count = f.number AND d.state = 'PENDING';

    WITH due AS (
        SELECT d.id FROM events.webhook_deliveries d
        JOIN events.webhook_endpoints e ON e.id = d.endpoint_id AND e.state = 'ENABLED'
        WHERE d.state = 'PENDING' AND d.next_attempt_at <= claim_at AND d.leased_until <= claim_at
        ORDER BY d.next_attempt_at LIMIT claim_limit FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE events.webhook_deliveries d SET leased_until = lease_until, attempt_count = d.attempt_count + 1,
        round_tries = d.round_tries + 1
    FROM due, events.webhook_endpoints e, events.events ev
    WHERE d.id = due.id AND e.id = d.endpoint_id AND ev.seq = d.event_seq
    RETURNING d.id::text, d.endpoint_id::text, e.url, e.secret, d.attempt_count, d.round_tries, ev.seq,
        ev.txid::text, ev.source, ev.source_id, ev.type, ev.occurred_at, ev.subject_type, ev.subject_id,
        ev.book_id::text, ev.actor, ev.request_id, ev.data_schema, ev.data::text;
$$"""


def upgrade() -> None:
    # A claim in flight keeps its next_attempt_at, so the due index also holds the (few) leased rows.
    op.execute(
        "ALTER TABLE events.webhook_deliveries ADD COLUMN leased_until timestamptz NOT NULL DEFAULT '-infinity',"
        " SET (fillfactor = 70)"
    )
    op.execute(SETTLE_AND_CLAIM)


def downgrade() -> None:
    op.execute("DROP FUNCTION events.settle_and_claim(jsonb, timestamptz, timestamptz, integer)")
    op.execute(
        "UPDATE events.webhook_deliveries SET next_attempt_at = greatest(next_attempt_at, leased_until);"
        " ALTER TABLE events.webhook_deliveries DROP COLUMN leased_until, RESET (fillfactor)"
    )
