"""The events gathered from every owning service's outbox, and how far each source has been read.

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    # txid orders the table for readers: a reader takes only rows of transactions older than every running
    # one (pg_snapshot_xmin), so no row can later appear behind a cursor that has passed it (docs/events.md).
    op.execute(
        """
        CREATE TABLE events.events (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            source text NOT NULL,
            source_id bigint NOT NULL,
            type text NOT NULL,
            occurred_at timestamptz NOT NULL,
            subject_type text NOT NULL,
            subject_id text NOT NULL,
            book_id uuid,
            actor text NOT NULL,
            request_id text NOT NULL DEFAULT '',
            data_schema text NOT NULL,
            data jsonb NOT NULL,
            ingested_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT events_once_per_source_entry UNIQUE (source, source_id)
        );
        CREATE INDEX events_by_txid ON events.events (txid, seq);
        CREATE INDEX events_by_ingested_at ON events.events (ingested_at);
        CREATE TABLE events.source_cursors (
            source text PRIMARY KEY,
            after_cursor text NOT NULL DEFAULT '',
            read_at timestamptz
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE events.source_cursors; DROP TABLE events.events")
