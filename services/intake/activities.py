"""Activities: who did what; anonymous visitors are stitched to a lead once they identify."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.canonical import ActivityIn
from services.intake.models import activities, lead_external_ids, leads, visitors
from shared.events.payloads import LeadActivity
from shared.outbox import Outbox


class UnknownLead(LookupError):
    """The activity names a lead intake does not know (or that was erased)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class LeadMismatch(UnknownLead):
    """The activity names its lead twice, and the two are different leads (409)."""


@dataclass(frozen=True)
class RecordedActivity:
    activity_id: str
    lead_id: str | None  # None: an anonymous visitor's, kept until they identify

    def as_json(self) -> dict[str, Any]:
        return {
            "activity_id": self.activity_id,
            "lead_id": self.lead_id,
            "anonymous": self.lead_id is None,
        }


async def record_activity(
    session: AsyncSession, outbox: Outbox, activity: ActivityIn
) -> RecordedActivity:
    """Store an activity; announce it if its lead is known (else keep it for stitching).

    An activity that names its lead (by id, email or external id) and a visitor id is the
    visitor identifying: their anonymous history goes to the lead first, as a capture with
    that visitor id would do.
    """
    lead_id, by_visitor = await _resolve(session, activity)
    if lead_id is not None and activity.visitor_id and not by_visitor:
        await stitch_visitor(session, outbox, visitor_id=activity.visitor_id, lead_id=lead_id)
    activity_id = str(uuid.uuid4())
    await session.execute(
        insert(activities).values(
            id=activity_id,
            lead_id=lead_id,
            visitor_id=activity.visitor_id,
            activity_type=activity.activity_type,
            occurred_at=activity.occurred_at,
            properties=activity.properties,
            received_at=datetime.now(UTC),
        )
    )
    if lead_id is not None:
        await _announce(
            session,
            outbox,
            lead_id,
            activity_id,
            activity.activity_type,
            activity.occurred_at,
            activity.properties,
            activity.visitor_id,
        )
    return RecordedActivity(activity_id, lead_id)


async def stitch_visitor(
    session: AsyncSession, outbox: Outbox, *, visitor_id: str, lead_id: str
) -> int:
    """Attribute a visitor's anonymous history to the lead they turned out to be."""
    insert_for = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert_for(visitors).values(visitor_id=visitor_id, lead_id=lead_id).on_conflict_do_nothing()
    )
    rows = (
        await session.execute(
            update(activities)
            .where(activities.c.visitor_id == visitor_id, activities.c.lead_id.is_(None))
            .values(lead_id=lead_id)
            .returning(
                activities.c.id,
                activities.c.activity_type,
                activities.c.occurred_at,
                activities.c.properties,
            )
        )
    ).all()
    for row in sorted(rows, key=lambda r: r.occurred_at):
        await _announce(
            session,
            outbox,
            lead_id,
            row.id,
            row.activity_type,
            _aware(row.occurred_at),
            row.properties,
            visitor_id,
        )
    return len(rows)


async def _announce(
    session: AsyncSession,
    outbox: Outbox,
    lead_id: str,
    activity_id: str,
    activity_type: str,
    occurred_at: datetime,
    properties: dict[str, Any],
    visitor_id: str | None,
) -> None:
    await outbox.add(
        session,
        LeadActivity(
            lead_id=uuid.UUID(lead_id),
            activity_id=uuid.UUID(activity_id),
            activity_type=activity_type,
            occurred_at=occurred_at,
            properties=properties,  # the visitor id is an identifier: it stays here
        ),
        subject=lead_id,
    )


async def _resolve(session: AsyncSession, activity: ActivityIn) -> tuple[str | None, bool]:
    """The activity's lead (None: an anonymous visitor's), and whether it was found only
    through the visitor id."""
    live = leads.c.erased_at.is_(None)
    if activity.lead_id:
        row = (
            await session.execute(
                select(leads.c.id, leads.c.email).where(leads.c.id == activity.lead_id, live)
            )
        ).first()
        if row is None:
            raise UnknownLead("lead_id", f"no lead {activity.lead_id}")
        if activity.email and row.email != activity.email:
            raise LeadMismatch(
                "email", f"lead {activity.lead_id} does not have this email: name one lead"
            )
        await _same_lead_by_external_ids(session, activity, str(row.id), "lead_id")
        return str(row.id), False
    if activity.email:
        found = await session.scalar(
            select(leads.c.id).where(leads.c.email == activity.email, live)
        )
        if found is None:
            raise UnknownLead("email", "no lead with this email: capture the lead first")
        await _same_lead_by_external_ids(session, activity, str(found), "email")
        return str(found), False
    for provider, external_id in activity.external_ids.items():
        found = await _lead_by_external_id(session, provider, external_id)
        if found is not None:
            await _same_lead_by_external_ids(session, activity, found, f"external_ids.{provider}")
            return found, False
    if activity.visitor_id:
        known = await session.scalar(
            select(visitors.c.lead_id).where(visitors.c.visitor_id == activity.visitor_id)
        )
        return known, True
    raise UnknownLead("external_ids", "no lead with these external ids")


async def _lead_by_external_id(
    session: AsyncSession, provider: str, external_id: str
) -> str | None:
    found = await session.scalar(
        select(lead_external_ids.c.lead_id).where(
            lead_external_ids.c.provider == provider,
            lead_external_ids.c.external_id == external_id,
        )
    )
    return None if found is None else str(found)


async def _same_lead_by_external_ids(
    session: AsyncSession, activity: ActivityIn, lead_id: str, named_by: str
) -> None:
    """An activity names one lead: an external id it gives that is another lead's is a
    conflict (409), as an email of another lead is. (One no lead has says nothing.)"""
    for provider, external_id in activity.external_ids.items():
        other = await _lead_by_external_id(session, provider, external_id)
        if other is not None and other != lead_id:
            raise LeadMismatch(
                f"external_ids.{provider}",
                f"{external_id!r} is another lead's than the one its {named_by} names: "
                "name one lead",
            )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
