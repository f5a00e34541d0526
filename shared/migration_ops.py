"""Schema changes to the tables every service has (outbox, inbox, event sequences), which
each service's own migration history applies with one call.

Revisions call these by name, so each is frozen once released: a later change to those
tables is a new function here and a new revision in every service, never an edit.
"""

from __future__ import annotations

from alembic import op


def drop_outbox_event_id_unique() -> None:
    """The outbox's event ids lose their unique index (UUIDv7s, never looked up by)."""
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_constraint(op.f("uq_outbox_event_id"), type_="unique")


def restore_outbox_event_id_unique() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.create_unique_constraint(op.f("uq_outbox_event_id"), ["event_id"])
