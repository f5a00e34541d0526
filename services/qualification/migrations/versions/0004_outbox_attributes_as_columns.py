"""the outbox keeps an event's attributes as columns, not its headers as JSON text

An outbox row held its event's `ce_*` headers as one JSON text, written by the producer
and parsed again by the relay for every event (~0.7 and ~2 µs). The row now holds the
attributes that vary (`event_type`, `event_time`, `traceparent`, and on SQLite the
`sequence`), and the relay makes the headers from them. Rows waiting to be published are
converted both ways.

Not a rolling upgrade: the older version writes the `headers` column this drops, so stop
its replicas before the new version starts (deploy/README.md, "Upgrading").

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from shared.migration_ops import outbox_attributes_as_columns, outbox_attributes_as_headers_text


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    outbox_attributes_as_columns()


def downgrade() -> None:
    outbox_attributes_as_headers_text("qualification")
