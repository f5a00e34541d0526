"""the outbox's event ids are no longer indexed

Every event id is a fresh UUIDv7 (unique by construction) and nothing looks an outbox row up
by it: the unique index only cost a b-tree insert per event written.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.drop_constraint(op.f('uq_outbox_event_id'), type_='unique')


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch_op:
        batch_op.create_unique_constraint(op.f('uq_outbox_event_id'), ['event_id'])
