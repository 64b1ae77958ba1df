"""Webhooks: endpoints with their signing secrets, one delivery per (endpoint, matching event), and the
attempts made; request ids for the webhook methods.

Revision ID: 0002
"""

from alembic import op

from kernel.idempotency import create_age_index, create_table

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    create_table("events")
    create_age_index("events")
    # States are services/events/webhook_model.py's values. A dispatcher claims a due delivery by moving its
    # next_attempt_at to the end of a lease: other dispatchers skip it until then, and if the claimer dies
    # the delivery is due again when the lease runs out. attempt_count fences the claimer's acknowledgement.
    op.execute(
        """
        CREATE TABLE events.webhook_endpoints (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            url text NOT NULL,
            event_types text[] NOT NULL DEFAULT '{}',
            book_id uuid,
            description text NOT NULL DEFAULT '',
            state text NOT NULL DEFAULT 'ENABLED',
            secret text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            secret_rotated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX webhook_endpoints_by_creation ON events.webhook_endpoints (created_at, id);
        CREATE TABLE events.webhook_deliveries (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            endpoint_id uuid NOT NULL REFERENCES events.webhook_endpoints (id) ON DELETE CASCADE,
            event_seq bigint NOT NULL REFERENCES events.events (seq) ON DELETE CASCADE,
            state text NOT NULL DEFAULT 'PENDING',
            attempt_count int NOT NULL DEFAULT 0,
            round_tries int NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            delivered_at timestamptz,
            finished_at timestamptz,
            last_status_code int NOT NULL DEFAULT 0,
            last_error text NOT NULL DEFAULT '',
            CONSTRAINT webhook_deliveries_once_per_event UNIQUE (endpoint_id, event_seq)
        );
        CREATE INDEX webhook_deliveries_due ON events.webhook_deliveries (next_attempt_at) WHERE state = 'PENDING';
        CREATE INDEX webhook_deliveries_by_endpoint ON events.webhook_deliveries (endpoint_id, created_at DESC, id);
        CREATE INDEX webhook_deliveries_by_creation ON events.webhook_deliveries (created_at DESC, id);
        CREATE INDEX webhook_deliveries_finished ON events.webhook_deliveries (finished_at)
            WHERE state <> 'PENDING';
        CREATE TABLE events.webhook_attempts (
            delivery_id uuid NOT NULL REFERENCES events.webhook_deliveries (id) ON DELETE CASCADE,
            number int NOT NULL,
            started_at timestamptz NOT NULL,
            duration_ms int NOT NULL,
            outcome text NOT NULL,
            status_code int NOT NULL DEFAULT 0,
            error text NOT NULL DEFAULT '',
            PRIMARY KEY (delivery_id, number)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE events.webhook_attempts; DROP TABLE events.webhook_deliveries;"
        " DROP TABLE events.webhook_endpoints; DROP TABLE events.idempotency_keys"
    )
