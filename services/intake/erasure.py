"""Erasure: a lead's personal data is removed here, and every service is told to forget it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import (
    activities,
    idempotency_keys,
    lead_external_ids,
    leads,
    visitors,
    webhook_deliveries,
)
from services.intake.providers import SENDER_KEYED_PREFIXES
from shared.events.payloads import LeadErased
from shared.outbox import Outbox


async def erase_lead(
    session: AsyncSession, outbox: Outbox, lead_id: str, *, requested_by: str
) -> bool | None:
    """Erase a lead: True when erased now, False if it already was, None if unknown."""
    row = (
        await session.execute(
            select(leads.c.id, leads.c.erased_at).where(leads.c.id == lead_id).with_for_update()
        )
    ).first()
    if row is None:
        return None
    if row.erased_at is not None:
        return False
    await session.execute(
        update(leads)
        .where(leads.c.id == lead_id)
        .values(
            email=None,
            profile={},
            field_sources={},
            field_times=null(),
            erased_at=datetime.now(UTC),
        )
    )
    await session.execute(delete(lead_external_ids).where(lead_external_ids.c.lead_id == lead_id))
    await session.execute(delete(visitors).where(visitors.c.lead_id == lead_id))
    # A delivery whose id is the sender's key for one event (a HubSpot event id, a Standard
    # Webhooks message id: no personal data) stays recorded, no longer linked to the
    # person: a platform retrying an event from before the erasure must find it a
    # duplicate, not capture the person again. Ids made from the person's data (Marketo's
    # name its lead id and digest its fields, and never come twice anyway) go.
    deliveries = webhook_deliveries.c
    senders_keys = or_(*(deliveries.delivery_id.startswith(p) for p in SENDER_KEYED_PREFIXES))
    await session.execute(
        update(webhook_deliveries)
        .where(deliveries.lead_id == lead_id, senders_keys)
        .values(lead_id=None)
    )
    await session.execute(delete(webhook_deliveries).where(deliveries.lead_id == lead_id))
    # (an answer kept for a retry names the lead, and came from a body with the email)
    await session.execute(delete(idempotency_keys).where(idempotency_keys.c.lead_id == lead_id))
    await session.execute(
        update(activities)
        .where(activities.c.lead_id == lead_id)
        .values(properties={}, visitor_id=None)
    )
    await outbox.add(
        session, LeadErased(lead_id=uuid.UUID(lead_id), requested_by=requested_by), subject=lead_id
    )
    return True
