"""Qualification's HTTP API: the lead's qualification, the lifecycle commands, BANT."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.qualification.bant import BantAssessment, BantPolicy, evaluate
from services.qualification.handlers import policy_of
from services.qualification.lead_state import LeadState, apply_step, load_state
from services.qualification.lifecycle import IllegalTransition, Step
from services.qualification.models import bant_assessments, lead_states, stage_transitions
from shared.auth.principal import Principal
from shared.auth.roles import require_roles
from shared.events.payloads import Actor
from shared.http import runtime_of
from shared.problems import Problem
from shared.runtime import ServiceRuntime
from shared.settings.services import QualificationSettings

router = APIRouter(tags=["qualification"])
Runtime = Annotated[ServiceRuntime, runtime_of("qualification")]
Reader = Annotated[
    Principal, Depends(require_roles("manager", "marketing", "sales", "integration", "viewer"))
]
Seller = Annotated[Principal, Depends(require_roles("sales", "manager"))]


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason_code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", examples=["no_budget", "spam"])
    text: str = Field(default="", max_length=2000)


class Acceptance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=2000)


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: Literal["won", "lost"]
    amount: Decimal | None = Field(default=None, ge=0, max_digits=16, decimal_places=2)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    reason_code: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    text: str = Field(default="", max_length=2000)


@router.get("/v1/leads/{lead_id}/qualification")
async def qualification(lead_id: uuid.UUID, runtime: Runtime, who: Reader) -> dict[str, Any]:
    """Score, fit, engagement with the rules that fired, stage, stage history and BANT."""
    async with runtime.db.engine.connect() as conn:
        row = (
            await conn.execute(select(lead_states).where(lead_states.c.lead_id == str(lead_id)))
        ).first()
        if row is None:
            raise _unknown(lead_id)
        history = (
            await conn.execute(
                select(stage_transitions)
                .where(stage_transitions.c.lead_id == str(lead_id))
                .order_by(stage_transitions.c.id)
            )
        ).all()
        bant = (
            await conn.execute(
                select(bant_assessments)
                .where(bant_assessments.c.lead_id == str(lead_id))
                .order_by(bant_assessments.c.at.desc())
                .limit(1)
            )
        ).first()
    return {
        "lead_id": str(lead_id),
        "stage": row.stage,
        "owner_id": row.owner_id,
        "score": row.score,
        "fit": row.fit,
        "engagement": row.engagement,
        "model_version": row.model_version,
        "explanation": row.explanation,
        "history": [_transition(t) for t in history],
        "bant": None
        if bant is None
        else {
            "assessment": bant.assessment,
            "passed": bant.passed,
            "unmet": bant.unmet,
            "at": _aware(bant.at),
        },
    }


@router.post("/v1/leads/{lead_id}/accept", responses={403: {}, 404: {}, 409: {}})
async def accept(
    lead_id: uuid.UUID, body: Acceptance, runtime: Runtime, who: Seller
) -> dict[str, Any]:
    """The owner takes the handed-off lead (go): mql/sgl -> sal."""
    return await _command(
        runtime,
        lead_id,
        who,
        lambda s, actor, now: s.lifecycle.accept(actor, at=now, note=body.note),
    )


@router.post("/v1/leads/{lead_id}/reject", responses={403: {}, 404: {}, 409: {}})
async def reject(
    lead_id: uuid.UUID, body: Rejection, runtime: Runtime, who: Seller
) -> dict[str, Any]:
    """The owner declines (no go): back to nurture, or disqualified (spam, duplicate, ...)."""
    return await _command(
        runtime,
        lead_id,
        who,
        lambda s, actor, now: s.lifecycle.reject(actor, body.reason_code, body.text, at=now),
    )


@router.put("/v1/leads/{lead_id}/bant", responses={403: {}, 404: {}, 409: {}})
async def assess_bant(
    lead_id: uuid.UUID, body: BantAssessment, runtime: Runtime, who: Seller
) -> dict[str, Any]:
    """Budget, authority, need, timeframe: passing the policy makes an SQL, else nurture."""
    settings = runtime.settings
    assert isinstance(settings, QualificationSettings)
    decision = evaluate(
        body, BantPolicy(required=settings.bant_required, min_met=settings.bant_min_met)
    )
    assessment_id = uuid.uuid4()

    async def decide(session: AsyncSession, state: LeadState, actor: Actor, now: datetime) -> Step:
        step = state.lifecycle.bant_decided(
            decision.passed, decision.unmet, actor=actor, at=now, assessment_id=assessment_id
        )
        await session.execute(
            insert(bant_assessments).values(
                id=str(assessment_id),
                lead_id=str(lead_id),
                assessment=body.model_dump(mode="json"),
                passed=decision.passed,
                unmet=decision.unmet,
                actor_id=actor.id,
                at=now,
            )
        )
        return step

    result = await _command(runtime, lead_id, who, None, with_session=decide)
    return {
        **result,
        "bant": {
            "passed": decision.passed,
            "unmet": decision.unmet,
            "explanation": decision.explanation,
        },
    }


@router.post("/v1/leads/{lead_id}/outcome", responses={403: {}, 404: {}, 409: {}, 422: {}})
async def record_outcome(
    lead_id: uuid.UUID, body: Outcome, runtime: Runtime, who: Seller
) -> dict[str, Any]:
    """The deal's outcome: won (amount, currency), or lost (reason) and recycled."""
    if body.result == "won" and (body.amount is None or body.currency is None):
        raise Problem(
            422,
            "Invalid request",
            "a won deal needs amount and currency",
            errors=[
                {"field": f, "reason": "required when result is won"}
                for f in ("amount", "currency")
                if getattr(body, f) is None
            ],
        )
    if body.result == "lost" and body.reason_code is None:
        raise Problem(
            422,
            "Invalid request",
            "a lost deal needs a reason_code",
            errors=[{"field": "reason_code", "reason": "required when result is lost"}],
        )
    if body.result == "won":
        return await _command(
            runtime,
            lead_id,
            who,
            lambda s, actor, now: s.lifecycle.won(
                actor, body.amount or Decimal(0), body.currency or "", at=now
            ),
        )
    return await _command(
        runtime,
        lead_id,
        who,
        lambda s, actor, now: s.lifecycle.lost(actor, body.reason_code or "", body.text, at=now),
    )


async def _command(
    runtime: ServiceRuntime,
    lead_id: uuid.UUID,
    who: Principal,
    command: Any,
    *,
    with_session: Any = None,
) -> dict[str, Any]:
    """Run one lifecycle command as the lead's owner (or a manager), in one unit of work."""
    policy = policy_of(runtime)
    actor = Actor(kind="user", id=who.id)
    async with runtime.db.transaction() as session:
        state = await load_state(session, str(lead_id), policy=policy)
        if state is None:
            raise _unknown(lead_id)
        if who.role not in ("manager", "admin") and who.id != state.owner_id:
            raise Problem(
                403,
                "Forbidden",
                "only the lead's owner or a manager may do this",
                errors=[
                    {
                        "field": "Authorization",
                        "reason": f"owner is {state.owner_id or 'nobody yet'}",
                    }
                ],
            )
        now = datetime.now(UTC)
        try:
            step = (
                await with_session(session, state, actor, now)
                if with_session
                else command(state, actor, now)
            )
        except IllegalTransition as exc:
            raise Problem(
                409,
                "Illegal transition",
                str(exc),
                stage=exc.stage,
                allowed=exc.allowed_commands,
                errors=[{"field": "stage", "reason": str(exc)}],
            ) from None
        except ValueError as exc:
            raise Problem(
                422, "Invalid request", str(exc), errors=[{"field": "body", "reason": str(exc)}]
            ) from None
        await apply_step(session, runtime.outbox, state, step)
    return {
        "lead_id": str(lead_id),
        "stage": step.lifecycle.stage,
        "transitions": [
            {"from": t.from_stage, "to": t.to_stage, "reason": t.reason.code}
            for t in step.transitions
        ],
    }


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive UTC times; answer with explicit UTC on every database."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _unknown(lead_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "Not Found",
        f"qualification knows no lead {lead_id}",
        errors=[{"field": "lead_id", "reason": "no such lead"}],
    )


def _transition(t: Any) -> dict[str, Any]:
    return {
        "from": t.from_stage,
        "to": t.to_stage,
        "command": t.command,
        "actor": {"kind": t.actor_kind, "id": t.actor_id},
        "reason": {"code": t.reason_code, "text": t.reason_text},
        "model_version": t.model_version,
        "bant_assessment_id": t.bant_assessment_id,
        "at": _aware(t.at),
    }
