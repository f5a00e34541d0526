"""the outbox's event ids are no longer indexed

Every event id is a fresh UUIDv7 (unique by construction) and nothing looks an outbox row up
by it: the unique index only cost a b-tree insert per event written.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from shared.migration_ops import drop_outbox_event_id_unique, restore_outbox_event_id_unique


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    drop_outbox_event_id_unique()


def downgrade() -> None:
    restore_outbox_event_id_unique()
