"""The webhooks service's tables (its own database; no other service reads them)."""

from shared.db import new_metadata
from shared.inbox import define_inbox_table
from shared.outbox_tables import define_outbox_tables

metadata = new_metadata()
outbox_tables = define_outbox_tables(metadata)
inbox_table = define_inbox_table(metadata)
