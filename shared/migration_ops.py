"""Schema changes to the tables every service has (outbox, inbox, event sequences), which
each service's own migration history applies with one call.

Revisions call these by name, so each is frozen once released: a later change to those
tables is a new function here and a new revision in every service, never an edit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op


def drop_outbox_event_id_unique() -> None:
    """The outbox's event ids lose their unique index (UUIDv7s, never looked up by)."""
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_constraint(op.f("uq_outbox_event_id"), type_="unique")


def restore_outbox_event_id_unique() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.create_unique_constraint(op.f("uq_outbox_event_id"), ["event_id"])


# The stored headers' form before `outbox_attributes_as_columns`: a JSON list of
# [name, value] pairs, `ce_sequence` zero-padded to twelve digits, "000000000000" where the
# relay sent the row's id (PostgreSQL).
_HEADERS_PLACEHOLDER_SEQUENCE = "000000000000"
_OUTBOX_CHUNK = 10_000  # rows converted at a time: a backlog of any size fits in memory


def outbox_attributes_as_columns() -> None:
    """The outbox keeps an event's attributes as columns (`event_type`, `event_time`,
    `traceparent`, `sequence`) instead of its headers as JSON text. Rows waiting to be
    published are converted: their headers are read back into the columns."""
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("event_type", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("event_time", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("traceparent", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("sequence", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    update = sa.text(
        "UPDATE outbox SET event_type = :event_type, event_time = :event_time, "
        "traceparent = :traceparent, sequence = :sequence WHERE id = :id"
    )
    for chunk in _outbox_chunks(bind, "headers"):
        rows = []
        for row_id, text in chunk:
            headers = dict(orjson.loads(text))
            sequence = headers["ce_sequence"]
            rows.append(
                {
                    "id": row_id,
                    "event_type": headers["ce_type"],
                    "event_time": headers["ce_time"],
                    "traceparent": headers.get("ce_traceparent"),
                    "sequence": None
                    if sequence == _HEADERS_PLACEHOLDER_SEQUENCE
                    else int(sequence),
                }
            )
        bind.execute(update, rows)
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.alter_column("event_type", existing_type=sa.String(length=200), nullable=False)
        batch_op.alter_column("event_time", existing_type=sa.String(length=40), nullable=False)
        batch_op.drop_column("headers")


def outbox_attributes_as_headers_text(service: str) -> None:
    """Back to the headers as JSON text (`service`'s: its events' `ce_source`)."""
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("headers", sa.Text(), nullable=True))
    bind = op.get_bind()
    update = sa.text("UPDATE outbox SET headers = :headers WHERE id = :id")
    columns = "event_id, key, event_type, event_time, traceparent, sequence"
    for chunk in _outbox_chunks(bind, columns):
        rows = []
        for row_id, event_id, key, event_type, event_time, traceparent, sequence in chunk:
            number = _HEADERS_PLACEHOLDER_SEQUENCE if sequence is None else f"{sequence:012d}"
            pairs = [
                ["ce_specversion", "1.0"],
                ["ce_id", event_id],
                ["ce_source", f"/handoff/{service}"],
                ["ce_type", event_type],
                ["ce_subject", key],
                ["ce_time", event_time],
                ["ce_partitionkey", key],
                ["ce_sequence", number],
                ["content-type", "application/json"],
            ]
            if traceparent:
                pairs.append(["ce_traceparent", traceparent])
            rows.append({"id": row_id, "headers": orjson.dumps(pairs).decode()})
        bind.execute(update, rows)
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.alter_column("headers", existing_type=sa.Text(), nullable=False)
        for name in ("sequence", "traceparent", "event_time", "event_type"):
            batch_op.drop_column(name)


def _outbox_chunks(bind: sa.Connection, columns: str) -> Iterator[Sequence[sa.Row[Any]]]:
    """The outbox's rows as (id, *columns), `_OUTBOX_CHUNK` at a time in the order of ids."""
    after = 0
    while True:
        chunk = bind.execute(
            sa.text(
                f"SELECT id, {columns} FROM outbox WHERE id > :after "  # noqa: S608 (ours)
                "ORDER BY id LIMIT :limit"
            ),
            {"after": after, "limit": _OUTBOX_CHUNK},
        ).all()
        if not chunk:
            return
        yield chunk
        after = chunk[-1][0]
