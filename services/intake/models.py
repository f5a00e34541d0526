"""The intake service's tables (its own database; no other service reads them)."""

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Table, Text

from services.intake.providers.base import DELIVERY_ID_MAX
from shared.db import new_metadata
from shared.inbox import define_inbox_table
from shared.outbox_tables import define_outbox_tables

metadata = new_metadata()
outbox_tables = define_outbox_tables(metadata)
inbox_table = define_inbox_table(metadata)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("domain", String(253), nullable=False, unique=True),
    Column("name", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

leads = Table(
    "leads",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), unique=True),  # NULL once erased
    Column("source", String(20), nullable=False),
    Column("account_id", String(36)),  # not indexed: nothing reads leads by account
    Column("profile", JSON, nullable=False),
    Column("field_sources", JSON, nullable=False),  # field -> marketing | sales (who set it)
    # field -> when it was last set (see `identity`); NULL on leads stored before 0005
    Column("field_times", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("erased_at", DateTime(timezone=True)),
)

lead_external_ids = Table(
    "lead_external_ids",
    metadata,
    Column("provider", String(40), primary_key=True),
    Column("external_id", String(200), primary_key=True),
    Column("lead_id", String(36), nullable=False, index=True),
)

visitors = Table(
    "visitors",
    metadata,
    Column("visitor_id", String(100), primary_key=True),
    Column("lead_id", String(36), nullable=False, index=True),
)

activities = Table(
    "activities",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("lead_id", String(36)),
    Column("visitor_id", String(100)),
    Column("activity_type", String(40), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("properties", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_activities_lead", "lead_id", "occurred_at"),
    Index("ix_activities_visitor", "visitor_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("lead_id", String(36)),  # the lead the answer names: an erasure drops it
    Index("ix_idempotency_keys_lead_id", "lead_id"),
)

inbound_sources = Table(
    "inbound_sources",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("provider", String(40), nullable=False, index=True),
    Column("secret", Text, nullable=False),
    Column("lead_source", String(20), nullable=False),
    Column("channel", String(40)),
    Column("field_map", JSON, nullable=False),
    Column("token_header", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("source_name", String(100), primary_key=True),
    Column("delivery_id", String(DELIVERY_ID_MAX), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("lead_id", String(36), index=True),  # erasure forgets the deliveries too
)
