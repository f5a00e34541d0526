"""Reading and writing a lead's lifecycle and score, with the events each change causes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.qualification.lifecycle import LeadLifecycle, LifecyclePolicy, Step
from services.qualification.models import (
    lead_activity_facts,
    lead_facts,
    lead_states,
    stage_transitions,
)
from services.qualification.scoring import ActivityFact, Score, score
from services.qualification.scoring_model import ScoringModel
from shared.events.payloads import LeadScored
from shared.outbox import Outbox


@dataclass
class LeadState:
    """A lead's lifecycle, owner and last score, as stored."""

    lead_id: str
    lifecycle: LeadLifecycle
    owner_id: str | None
    score: float
    model_version: str | None


class Erased:
    """What `load_lead` returns for an erased lead: facts about it are no longer taken."""


ERASED = Erased()


async def load_lead(
    session: AsyncSession, lead_id: str, *, policy: LifecyclePolicy
) -> LeadState | Erased | None:
    """The lead's state (locked), ERASED, or None when unknown: one statement for all three."""
    row = (
        await session.execute(
            select(lead_states).where(lead_states.c.lead_id == lead_id).with_for_update()
        )
    ).first()
    if row is None:
        return None
    if row.erased_at is not None:
        return ERASED
    return _state(row, policy)


async def load_state(
    session: AsyncSession, lead_id: str, *, policy: LifecyclePolicy
) -> LeadState | None:
    """The lead's state, locked for this transaction (PostgreSQL), or None."""
    row = (
        await session.execute(
            select(lead_states).where(lead_states.c.lead_id == lead_id).with_for_update()
        )
    ).first()
    if row is None or row.erased_at is not None:
        return None
    return _state(row, policy)


def _state(row: Any, policy: LifecyclePolicy) -> LeadState:
    lifecycle = LeadLifecycle(
        stage=row.stage,
        entered_at=_aware(row.entered_at),
        recycled_at=_aware(row.recycled_at),
        policy=policy,
    )
    return LeadState(row.lead_id, lifecycle, row.owner_id, row.score, row.model_version)


async def apply_step(
    session: AsyncSession, outbox: Outbox, state: LeadState, step: Step, *, new: bool = False
) -> None:
    """Record a command's transitions and announce each as `lead.stage_changed`."""
    lead_uuid = uuid.UUID(state.lead_id)
    for t in step.transitions:
        await session.execute(
            insert(stage_transitions).values(
                lead_id=state.lead_id,
                from_stage=t.from_stage,
                to_stage=t.to_stage,
                command=t.command,
                actor_kind=t.actor.kind,
                actor_id=t.actor.id,
                reason_code=t.reason.code,
                reason_text=t.reason.text,
                model_version=t.model_version,
                bant_assessment_id=str(t.bant_assessment_id) if t.bant_assessment_id else None,
                amount=t.amount,
                currency=t.currency,
                at=t.at,
            )
        )
        await outbox.add(session, t.to_event(lead_uuid), subject=state.lead_id)
    life = step.lifecycle
    values: dict[str, Any] = {
        "stage": life.stage,
        "entered_at": life.entered_at,
        "recycled_at": life.recycled_at,
    }
    if life.stage in ("lead", "nurture") and not new:  # marketing's again: no rep owns it
        values["owner_id"] = state.owner_id = None
    if new:
        await session.execute(
            insert(lead_states).values(
                lead_id=state.lead_id, owner_id=state.owner_id, explanation=[], **values
            )
        )
    else:
        await session.execute(
            update(lead_states).where(lead_states.c.lead_id == state.lead_id).values(**values)
        )
    state.lifecycle = life


async def rescore(
    session: AsyncSession, outbox: Outbox, state: LeadState, model: ScoringModel, *, now: datetime
) -> Score:
    """Score the lead under `model`; announce it; make it an MQL if the score says so."""
    result = score(
        model,
        await _profile(session, state.lead_id),
        await _activities(session, state.lead_id),
        now=now,
    )
    explanation = [c.model_dump(mode="json") for c in result.explanation()]
    await session.execute(
        update(lead_states)
        .where(lead_states.c.lead_id == state.lead_id)
        .values(
            score=result.total,
            fit=result.fit,
            engagement=result.engagement,
            model_version=result.model_version,
            explanation=explanation,
            scored_at=now,
        )
    )
    await outbox.add(
        session,
        LeadScored(
            lead_id=uuid.UUID(state.lead_id),
            score=result.total,
            delta=round(result.total - state.score, 2),
            fit=result.fit,
            engagement=result.engagement,
            model_version=result.model_version,
            explanation=result.explanation(),
        ),
        subject=state.lead_id,
    )
    state.score, state.model_version = result.total, result.model_version
    if state.lifecycle.mql_due(result):
        await apply_step(session, outbox, state, state.lifecycle.score_crossed(result, at=now))
    return result


async def _profile(session: AsyncSession, lead_id: str) -> dict[str, Any]:
    row = (
        await session.execute(select(lead_facts.c.profile).where(lead_facts.c.lead_id == lead_id))
    ).first()
    return dict(row.profile) if row else {}


async def _activities(session: AsyncSession, lead_id: str) -> list[ActivityFact]:
    rows = await session.execute(
        select(lead_activity_facts)
        .where(lead_activity_facts.c.lead_id == lead_id)
        .order_by(lead_activity_facts.c.occurred_at)
    )
    return [
        ActivityFact(
            activity_id=uuid.UUID(r.activity_id),
            activity_type=r.activity_type,
            occurred_at=_aware(r.occurred_at) or datetime.now(UTC),
            event_id=uuid.UUID(r.event_id) if r.event_id else None,
        )
        for r in rows
    ]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
