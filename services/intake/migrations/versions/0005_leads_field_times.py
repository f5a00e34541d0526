"""leads.field_times: when each field of a lead was last set

A platform retries a failed webhook for up to a day, so an older event can arrive after a
newer one; a field keeps the value of the latest event that set it (see
`services/intake/identity.py`). Nullable: leads stored before have no times, and take
any event, as they did.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('field_times', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_column('field_times')
