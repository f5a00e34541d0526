"""Reading and writing a lead's lifecycle and score, with the events each change causes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Update, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.qualification.lifecycle import LeadLifecycle, LifecyclePolicy, Step
from services.qualification.models import (
    lead_activity_facts,
    lead_facts,
    lead_states,
    stage_transitions,
)
from services.qualification.scoring import ActivityFact, LiveHistory, Score, score
from services.qualification.scoring_model import ScoringModel
from shared.events.payloads import LeadScored
from shared.outbox import Encoded, Outbox


@dataclass
class LeadState:
    """A lead's lifecycle, owner and last score, as stored."""

    lead_id: str
    lifecycle: LeadLifecycle
    owner_id: str | None
    score: float
    model_version: str | None


class Erased:
    """What `load_leads` gives for an erased lead: facts about it are no longer taken."""


ERASED = Erased()


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


async def load_leads(
    session: AsyncSession, lead_ids: Iterable[str], *, policy: LifecyclePolicy
) -> dict[str, LeadState | Erased]:
    """Each lead's state (locked), or ERASED, in one statement; unknown leads are left out."""
    ids = sorted(set(lead_ids))  # one lock order for every transaction: no deadlocks
    rows = await session.execute(
        select(lead_states)
        .where(lead_states.c.lead_id.in_(ids))
        .order_by(lead_states.c.lead_id)
        .with_for_update()
    )
    return {r.lead_id: ERASED if r.erased_at is not None else _state(r, policy) for r in rows}


@dataclass
class Writes:
    """Changes gathered over a run of events and written at its end, one statement per kind
    (rather than a round trip per change). Reads in between must not need them: the handler
    that gathers them keeps the leads' state in memory."""

    transitions: list[dict[str, Any]] = field(default_factory=list)
    # by lead: its stage columns now, and whether a step in the run took its owner away
    moves: dict[str, tuple[dict[str, Any], bool]] = field(default_factory=dict)
    scores: dict[str, tuple[Score, datetime]] = field(default_factory=dict)  # by lead: last

    async def write(self, session: AsyncSession) -> None:
        if self.transitions:
            await session.execute(_RECORD_TRANSITION, self.transitions)
        for disown, statement in ((False, _MOVE), (True, _MOVE_AND_DISOWN)):
            rows = [
                _parameters(lead_id, values)
                for lead_id, (values, disowned) in self.moves.items()
                if disowned is disown
            ]
            if rows:
                await session.execute(statement, rows)
        await store_scores(session, self.scores)


async def apply_step(
    session: AsyncSession,
    outbox: Outbox,
    state: LeadState,
    step: Step,
    *,
    new: bool = False,
    trace: str | None = None,
    writes: Writes | None = None,
) -> None:
    """Record a command's transitions and announce each as `lead.stage_changed`; with
    `writes`, the rows are gathered there (a new lead's are always written at once)."""
    lead_uuid = uuid.UUID(state.lead_id)
    for t in step.transitions:
        row = {
            "lead_id": state.lead_id,
            "from_stage": t.from_stage,
            "to_stage": t.to_stage,
            "command": t.command,
            "actor_kind": t.actor.kind,
            "actor_id": t.actor.id,
            "reason_code": t.reason.code,
            "reason_text": t.reason.text,
            "model_version": t.model_version,
            "bant_assessment_id": str(t.bant_assessment_id) if t.bant_assessment_id else None,
            "amount": t.amount,
            "currency": t.currency,
            "at": t.at,
        }
        if writes is not None and not new:
            writes.transitions.append(row)
        else:
            await session.execute(_RECORD_TRANSITION, row)
        await outbox.add(session, t.to_event(lead_uuid), subject=state.lead_id, traceparent=trace)
    life = step.lifecycle
    values: dict[str, Any] = {
        "stage": life.stage,
        "entered_at": life.entered_at,
        "recycled_at": life.recycled_at,
    }
    disown = life.stage in ("lead", "nurture") and not new  # marketing's again: no rep owns it
    if disown:
        state.owner_id = None
    if new:
        await session.execute(
            insert(lead_states).values(
                lead_id=state.lead_id, owner_id=state.owner_id, explanation=[], **values
            )
        )
    elif writes is not None:
        earlier = writes.moves.get(state.lead_id)
        writes.moves[state.lead_id] = (values, disown or bool(earlier and earlier[1]))
    else:
        await session.execute(
            _MOVE_AND_DISOWN if disown else _MOVE, _parameters(state.lead_id, values)
        )
    state.lifecycle = life


def _update_state(*columns: str) -> Update:
    """`UPDATE lead_states SET <column> = :b_<column>, ... WHERE lead_id = :b_lead_id`, built
    once (so compiled once) and run with a row of parameters per lead."""
    return (
        update(lead_states)
        .where(lead_states.c.lead_id == bindparam("b_lead_id"))
        .values({column: bindparam(f"b_{column}") for column in columns})
    )


def _parameters(lead_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {"b_lead_id": lead_id, **{f"b_{column}": v for column, v in values.items()}}


_RECORD_TRANSITION = insert(stage_transitions)
_MOVE = _update_state("stage", "entered_at", "recycled_at")
_MOVE_AND_DISOWN = _MOVE.values(owner_id=None)


async def rescore(
    session: AsyncSession, outbox: Outbox, state: LeadState, model: ScoringModel, *, now: datetime
) -> Score:
    """Score the lead under `model`; announce it; make it an MQL if the score says so."""
    result = score(
        model,
        (await load_profiles(session, [state.lead_id])).get(state.lead_id, {}),
        (await load_histories(session, [state.lead_id])).get(state.lead_id, []),
        now=now,
    )
    await store_scores(session, {state.lead_id: (result, now)})
    await announce(session, outbox, state, result, now=now)
    return result


async def announce(
    session: AsyncSession,
    outbox: Outbox,
    state: LeadState,
    result: Score,
    *,
    now: datetime,
    trace: str | None = None,
    writes: Writes | None = None,
) -> None:
    """Emit `lead.scored` for a new score, and make the lead an MQL if the score says so.

    The score itself is written by `store_scores` (once per lead, however many scores a
    batch of events gave it); a stage change goes to `writes` when given."""
    await outbox.add(session, scored_event(state, result), subject=state.lead_id, traceparent=trace)
    state.score, state.model_version = result.total, result.model_version
    if state.lifecycle.mql_due(result):
        step = state.lifecycle.score_crossed(result, at=now)
        await apply_step(session, outbox, state, step, trace=trace, writes=writes)


def scored_event(state: LeadState, result: Score) -> Encoded:
    """`lead.scored` for a new score, encoded straight from the score: one per event on the
    hot path, where building the model only to serialize it cost more than the scoring."""
    data = {
        "lead_id": state.lead_id,
        "score": float(result.total),
        "delta": float(round(result.total - state.score, 2)),
        "fit": float(result.fit),
        "engagement": float(result.engagement),
        "model_version": result.model_version,
        "explanation": result.explanation(),
    }
    return Encoded(LeadScored, orjson.dumps(data))


_STORE_SCORE = _update_state(
    "score", "fit", "engagement", "model_version", "explanation", "scored_at"
)


async def store_scores(session: AsyncSession, scores: Mapping[str, tuple[Score, datetime]]) -> None:
    """Write each lead's latest score and its explanation (one statement, many rows)."""
    if not scores:
        return
    rows = [
        _parameters(
            lead_id,
            {
                "score": result.total,
                "fit": result.fit,
                "engagement": result.engagement,
                "model_version": result.model_version,
                "explanation": result.explanation(),
                "scored_at": at,
            },
        )
        for lead_id, (result, at) in scores.items()
    ]
    await session.execute(_STORE_SCORE, rows)


async def stored_activities(session: AsyncSession, activity_ids: Iterable[str]) -> set[str]:
    """Which of these activities are stored already (for whichever lead)."""
    rows = await session.execute(
        select(lead_activity_facts.c.activity_id).where(
            lead_activity_facts.c.activity_id.in_(list(activity_ids))
        )
    )
    return set(rows.scalars())


async def load_profiles(
    session: AsyncSession, lead_ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """The profiles intake announced, of the leads that have one."""
    rows = await session.execute(
        select(lead_facts.c.lead_id, lead_facts.c.profile).where(
            lead_facts.c.lead_id.in_(list(lead_ids))
        )
    )
    return {r.lead_id: dict(r.profile) for r in rows}


async def load_histories(
    session: AsyncSession,
    lead_ids: Iterable[str],
    *,
    live: LiveHistory | None = None,
    now: datetime | None = None,
) -> dict[str, list[ActivityFact]]:
    """Each lead's stored activities, oldest first (leads without any are left out); with
    `live` and `now`, only those that can still count in a score at `now` or later."""
    query = select(lead_activity_facts).where(lead_activity_facts.c.lead_id.in_(list(lead_ids)))
    since = live.since(now) if live is not None and now is not None else None
    if live is not None and since is not None:
        query = query.where(
            (lead_activity_facts.c.occurred_at >= since)
            | lead_activity_facts.c.activity_type.in_(sorted(live.always))
        )
    rows = await session.execute(
        query.order_by(lead_activity_facts.c.lead_id, lead_activity_facts.c.occurred_at)
    )
    histories: dict[str, list[ActivityFact]] = {}
    for r in rows:
        histories.setdefault(r.lead_id, []).append(
            ActivityFact(
                activity_id=r.activity_id,
                activity_type=r.activity_type,
                occurred_at=_aware(r.occurred_at) or datetime.now(UTC),
                event_id=r.event_id,
            )
        )
    return histories


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
