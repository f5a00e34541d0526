"""The outbox's tables: events waiting to be published, and each subject's last sequence.

An outbox row holds an event's CloudEvents attributes as columns (`event_id`,
`event_type`, `key` the subject, `event_time`, `traceparent`, `sequence`); the relay makes
the `ce_*` headers from them as it publishes (`shared.events.codec.OutboxHeaders`), so no
JSON is written, stored or parsed for them. `sequence` is SQLite's number (its
per-subject counter); on PostgreSQL it is NULL and the row's id is the sequence
(`shared.outbox_sql`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
)


def define_outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and per-subject sequence tables, added to a service's metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column(
            "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        Column("event_id", String(36), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("event_type", String(200), nullable=False),
        Column("event_time", String(40), nullable=False),  # ISO 8601, as the header says it
        Column("traceparent", Text, nullable=True),
        Column("sequence", BigInteger, nullable=True),
        Column("value", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    sequences = Table(
        "event_sequences",
        metadata,
        Column("subject", String(200), primary_key=True),
        Column("last", BigInteger, nullable=False),
    )
    return outbox, sequences
