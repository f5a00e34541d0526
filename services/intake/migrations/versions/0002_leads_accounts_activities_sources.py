"""leads, accounts, activities, sources

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('domain', name=op.f('uq_accounts_domain'))
    )
    op.create_table('activities',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('lead_id', sa.String(length=36), nullable=True),
    sa.Column('visitor_id', sa.String(length=100), nullable=True),
    sa.Column('activity_type', sa.String(length=40), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_activities'))
    )
    with op.batch_alter_table('activities', schema=None) as batch_op:
        batch_op.create_index('ix_activities_lead', ['lead_id', 'occurred_at'], unique=False)
        batch_op.create_index('ix_activities_visitor', ['visitor_id'], unique=False)

    op.create_table('idempotency_keys',
    sa.Column('principal', sa.String(length=200), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('principal', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('inbound_sources',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('provider', sa.String(length=40), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('lead_source', sa.String(length=20), nullable=False),
    sa.Column('channel', sa.String(length=40), nullable=True),
    sa.Column('field_map', sa.JSON(), nullable=False),
    sa.Column('token_header', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_inbound_sources'))
    )
    with op.batch_alter_table('inbound_sources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_sources_provider'), ['provider'], unique=False)

    op.create_table('lead_external_ids',
    sa.Column('provider', sa.String(length=40), nullable=False),
    sa.Column('external_id', sa.String(length=200), nullable=False),
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'external_id', name=op.f('pk_lead_external_ids'))
    )
    with op.batch_alter_table('lead_external_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lead_external_ids_lead_id'), ['lead_id'], unique=False)

    op.create_table('leads',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('account_id', sa.String(length=36), nullable=True),
    sa.Column('profile', sa.JSON(), nullable=False),
    sa.Column('field_sources', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leads')),
    sa.UniqueConstraint('email', name=op.f('uq_leads_email'))
    )
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_leads_account_id'), ['account_id'], unique=False)

    op.create_table('visitors',
    sa.Column('visitor_id', sa.String(length=100), nullable=False),
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('visitor_id', name=op.f('pk_visitors'))
    )
    with op.batch_alter_table('visitors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_visitors_lead_id'), ['lead_id'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('source_name', sa.String(length=100), nullable=False),
    sa.Column('delivery_id', sa.String(length=300), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lead_id', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('source_name', 'delivery_id', name=op.f('pk_webhook_deliveries'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_lead_id'), ['lead_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_lead_id'))

    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('visitors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_visitors_lead_id'))

    op.drop_table('visitors')
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_leads_account_id'))

    op.drop_table('leads')
    with op.batch_alter_table('lead_external_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lead_external_ids_lead_id'))

    op.drop_table('lead_external_ids')
    with op.batch_alter_table('inbound_sources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_sources_provider'))

    op.drop_table('inbound_sources')
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('activities', schema=None) as batch_op:
        batch_op.drop_index('ix_activities_visitor')
        batch_op.drop_index('ix_activities_lead')

    op.drop_table('activities')
    op.drop_table('accounts')
