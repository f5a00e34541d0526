"""idempotency_keys.lead_id: the lead a stored answer names, so an erasure can drop it

An answer kept for an `Idempotency-Key` names the lead it captured, and its request's hash
comes from a body that held the person's email. Erasing the lead deletes those answers: a
retry of the same key after the erasure is then captured anew, not answered with the
erased lead. Answers stored before this revision have no lead id and are left as they are.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lead_id', sa.String(length=36), nullable=True))
        batch_op.create_index('ix_idempotency_keys_lead_id', ['lead_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotency_keys_lead_id')
        batch_op.drop_column('lead_id')
