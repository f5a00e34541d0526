"""The qualification service's tables (its own database; no other service reads them)."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    text,
)

from shared.db import new_metadata
from shared.inbox import define_inbox_table
from shared.outbox_tables import define_outbox_tables

metadata = new_metadata()
outbox_tables = define_outbox_tables(metadata)
inbox_table = define_inbox_table(metadata)

# What intake told us about a lead (no direct identifiers), fed by lead.captured/updated.
lead_facts = Table(
    "lead_facts",
    metadata,
    Column("lead_id", String(36), primary_key=True),
    Column("source", String(20), nullable=False),
    Column("profile", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

lead_activity_facts = Table(
    "lead_activity_facts",
    metadata,
    Column("activity_id", String(36), primary_key=True),
    Column("lead_id", String(36), nullable=False),
    Column("activity_type", String(40), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(36)),
    Index("ix_lead_activity_facts_lead", "lead_id", "occurred_at"),
)

# The single authority on stages, with the current score and owner.
lead_states = Table(
    "lead_states",
    metadata,
    Column("lead_id", String(36), primary_key=True),
    Column("stage", String(20), nullable=False, index=True),
    Column("entered_at", DateTime(timezone=True), nullable=False),
    Column("recycled_at", DateTime(timezone=True)),
    Column("owner_id", String(200)),
    Column("score", Float, nullable=False, default=0.0),
    Column("fit", Float, nullable=False, default=0.0),
    Column("engagement", Float, nullable=False, default=0.0),
    Column("model_version", String(100)),
    Column("explanation", JSON, nullable=False, default=list),
    Column("scored_at", DateTime(timezone=True)),
    Column("erased_at", DateTime(timezone=True)),  # later facts about the lead are ignored
)

# Owners as routing announced them; kept apart so an assignment may arrive first.
lead_owners = Table(
    "lead_owners",
    metadata,
    Column("lead_id", String(36), primary_key=True),
    Column("owner_id", String(200), nullable=False),
)

stage_transitions = Table(
    "stage_transitions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("lead_id", String(36), nullable=False, index=True),
    Column("from_stage", String(20)),
    Column("to_stage", String(20), nullable=False),
    Column("command", String(20), nullable=False),
    Column("actor_kind", String(10), nullable=False),
    Column("actor_id", String(200), nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("reason_text", Text, nullable=False),
    Column("model_version", String(100)),
    Column("bant_assessment_id", String(36)),
    Column("amount", Numeric(18, 2)),
    Column("currency", String(3)),
    Column("at", DateTime(timezone=True), nullable=False),
)

scoring_models = Table(
    "scoring_models",
    metadata,
    Column("version", String(100), primary_key=True),
    Column("document", Text, nullable=False),
    Column("status", String(10), nullable=False),  # draft | active | retired
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("activated_at", DateTime(timezone=True)),
    # At most one active model, whatever two approvals racing each other do.
    Index(
        "uq_scoring_models_one_active",
        "status",
        unique=True,
        sqlite_where=text("status = 'active'"),
        postgresql_where=text("status = 'active'"),
    ),
)

model_approvals = Table(
    "model_approvals",
    metadata,
    Column("version", String(100), primary_key=True),
    Column("team", String(20), primary_key=True),  # marketing | sales
    Column("approver_id", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

bant_assessments = Table(
    "bant_assessments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("lead_id", String(36), nullable=False, index=True),
    Column("assessment", JSON, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("unmet", JSON, nullable=False),
    Column("actor_id", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# After a model is activated every lead is rescored under it, in batches, resumably.
rescore_jobs = Table(
    "rescore_jobs",
    metadata,
    Column("version", String(100), primary_key=True),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False),
    Column("last_lead_id", String(36)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)
