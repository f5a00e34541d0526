"""leads.account_id is no longer indexed

Nothing looks leads up by account (accounts are found by domain, leads by id, email or
external id), and the index cost every new lead an insert at one of as many b-tree
positions as there are accounts. Writing 100,000 lead rows alone in 1,000-row batches on
SQLite: ~23 µs a row with it, ~11 without; the import benchmark: ~4% more rows/s on
SQLite, ~1% on PostgreSQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index('ix_leads_account_id', table_name='leads')


def downgrade() -> None:
    op.create_index('ix_leads_account_id', 'leads', ['account_id'], unique=False)
