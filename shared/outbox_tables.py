"""The outbox's tables: events waiting to be published, and each subject's last sequence."""

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
        Column("headers", Text, nullable=False),
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
