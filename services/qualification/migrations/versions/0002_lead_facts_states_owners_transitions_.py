"""lead facts, states, owners, transitions, scoring models, BANT, rescoring

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
    op.create_table('bant_assessments',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.Column('assessment', sa.JSON(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('unmet', sa.JSON(), nullable=False),
    sa.Column('actor_id', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bant_assessments'))
    )
    with op.batch_alter_table('bant_assessments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bant_assessments_lead_id'), ['lead_id'], unique=False)

    op.create_table('lead_activity_facts',
    sa.Column('activity_id', sa.String(length=36), nullable=False),
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.Column('activity_type', sa.String(length=40), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=True),
    sa.PrimaryKeyConstraint('activity_id', name=op.f('pk_lead_activity_facts'))
    )
    with op.batch_alter_table('lead_activity_facts', schema=None) as batch_op:
        batch_op.create_index('ix_lead_activity_facts_lead', ['lead_id', 'occurred_at'], unique=False)

    op.create_table('lead_facts',
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('profile', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('lead_id', name=op.f('pk_lead_facts'))
    )
    op.create_table('lead_owners',
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.Column('owner_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('lead_id', name=op.f('pk_lead_owners'))
    )
    op.create_table('lead_states',
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.Column('stage', sa.String(length=20), nullable=False),
    sa.Column('entered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recycled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('owner_id', sa.String(length=200), nullable=True),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('fit', sa.Float(), nullable=False),
    sa.Column('engagement', sa.Float(), nullable=False),
    sa.Column('model_version', sa.String(length=100), nullable=True),
    sa.Column('explanation', sa.JSON(), nullable=False),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('lead_id', name=op.f('pk_lead_states'))
    )
    with op.batch_alter_table('lead_states', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lead_states_stage'), ['stage'], unique=False)

    op.create_table('model_approvals',
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('team', sa.String(length=20), nullable=False),
    sa.Column('approver_id', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', 'team', name=op.f('pk_model_approvals'))
    )
    op.create_table('rescore_jobs',
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('last_lead_id', sa.String(length=36), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_rescore_jobs'))
    )
    op.create_table('scoring_models',
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_scoring_models'))
    )
    with op.batch_alter_table('scoring_models', schema=None) as batch_op:
        batch_op.create_index('uq_scoring_models_one_active', ['status'], unique=True, sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))

    op.create_table('stage_transitions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('lead_id', sa.String(length=36), nullable=False),
    sa.Column('from_stage', sa.String(length=20), nullable=True),
    sa.Column('to_stage', sa.String(length=20), nullable=False),
    sa.Column('command', sa.String(length=20), nullable=False),
    sa.Column('actor_kind', sa.String(length=10), nullable=False),
    sa.Column('actor_id', sa.String(length=200), nullable=False),
    sa.Column('reason_code', sa.String(length=64), nullable=False),
    sa.Column('reason_text', sa.Text(), nullable=False),
    sa.Column('model_version', sa.String(length=100), nullable=True),
    sa.Column('bant_assessment_id', sa.String(length=36), nullable=True),
    sa.Column('amount', sa.Numeric(precision=18, scale=2), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_transitions'))
    )
    with op.batch_alter_table('stage_transitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stage_transitions_lead_id'), ['lead_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('stage_transitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stage_transitions_lead_id'))

    op.drop_table('stage_transitions')
    with op.batch_alter_table('scoring_models', schema=None) as batch_op:
        batch_op.drop_index('uq_scoring_models_one_active', sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))

    op.drop_table('scoring_models')
    op.drop_table('rescore_jobs')
    op.drop_table('model_approvals')
    with op.batch_alter_table('lead_states', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lead_states_stage'))

    op.drop_table('lead_states')
    op.drop_table('lead_owners')
    op.drop_table('lead_facts')
    with op.batch_alter_table('lead_activity_facts', schema=None) as batch_op:
        batch_op.drop_index('ix_lead_activity_facts_lead')

    op.drop_table('lead_activity_facts')
    with op.batch_alter_table('bant_assessments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bant_assessments_lead_id'))

    op.drop_table('bant_assessments')
