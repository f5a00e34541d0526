"""Scoring model versions: drafts, the joint sign-off, and the one active model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.qualification.models import (
    lead_states,
    model_approvals,
    rescore_jobs,
    scoring_models,
)
from services.qualification.scoring_model import ScoringModel, default_model, load_model

TEAMS = ("marketing", "sales")
_parsed: dict[str, ScoringModel] = {}


class ModelProblem(Exception):
    """A request about scoring models that cannot be honoured (status, field and reason)."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.field, self.reason = status, field, reason


def parsed(version: str, document: str) -> ScoringModel:
    """A stored document, parsed once per process."""
    key = f"{version}:{hash(document)}"
    if key not in _parsed:
        _parsed[key] = load_model(document)
    return _parsed[key]


ACTIVE_TTL = 1.0  # seconds a process trusts its idea of the active model
_active: dict[str, tuple[float, ScoringModel]] = {}


async def active_model(session: AsyncSession) -> ScoringModel:
    """The active model (cached for a second per database: it is read on every event)."""
    key = str(session.bind.url)
    now = time.monotonic()
    cached = _active.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    model = await load_active_model(session)
    _active[key] = (now + ACTIVE_TTL, model)
    return model


def forget_active_model() -> None:
    """Drop the cached active model (this process just activated another)."""
    _active.clear()


async def load_active_model(session: AsyncSession) -> ScoringModel:
    """The active model; the shipped default becomes active when there is none yet."""
    row = await _active_row(session)
    if row is not None:
        return parsed(row.version, row.document)
    model = default_model()
    document = (resources.files("services.qualification") / "default_model.yaml").read_text()
    insert_for = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    now = datetime.now(UTC)
    await session.execute(
        insert_for(scoring_models)
        .values(
            version=model.version,
            document=document,
            status="active",
            created_by="system",
            created_at=now,
            activated_at=now,
        )
        .on_conflict_do_nothing()
    )
    row = await _active_row(session)  # another replica may have been first
    return parsed(row.version, row.document) if row is not None else model


async def _active_row(session: AsyncSession) -> Any:
    return (
        await session.execute(
            select(scoring_models.c.version, scoring_models.c.document)
            .where(scoring_models.c.status == "active")
            .order_by(scoring_models.c.activated_at.desc())
            .limit(1)
        )
    ).first()


async def create_draft(session: AsyncSession, document: str, *, author: str) -> ScoringModel:
    """Store a new model version as a draft (it scores nothing until both teams approve)."""
    model = load_model(document)
    if model.version == default_model().version:
        raise ModelProblem(
            409,
            "version",
            f"version {model.version!r} is the shipped default's; give your model its own version",
        )
    exists = await session.scalar(
        select(scoring_models.c.version).where(scoring_models.c.version == model.version)
    )
    if exists is not None:
        raise ModelProblem(409, "version", f"version {model.version!r} exists; use a new one")
    await session.execute(
        insert(scoring_models).values(
            version=model.version,
            document=document,
            status="draft",
            created_by=author,
            created_at=datetime.now(UTC),
        )
    )
    return model


@dataclass(frozen=True)
class Approval:
    version: str
    approved_by: dict[str, str]  # team -> manager
    activated: bool


async def approve(
    session: AsyncSession, version: str, *, manager: str, team: str | None
) -> Approval:
    """One team's manager signs a draft off; with both teams' sign-off it becomes active."""
    row = (
        await session.execute(
            select(scoring_models).where(scoring_models.c.version == version).with_for_update()
        )
    ).first()
    if row is None:
        raise ModelProblem(404, "version", f"no scoring model {version!r}")
    if row.status != "draft":
        raise ModelProblem(409, "version", f"model {version!r} is {row.status}, not a draft")
    if team not in TEAMS:
        raise ModelProblem(
            403, "Authorization", "approvals need a manager token of the marketing or sales team"
        )
    approvals = {
        r.team: r.approver_id
        for r in await session.execute(
            select(model_approvals).where(model_approvals.c.version == version)
        )
    }
    if team in approvals:
        raise ModelProblem(409, "team", f"{team} approved already ({approvals[team]})")
    if manager in approvals.values():
        raise ModelProblem(409, "Authorization", "the two approvals must come from two people")
    await session.execute(
        insert(model_approvals).values(
            version=version, team=team, approver_id=manager, at=datetime.now(UTC)
        )
    )
    approvals[team] = manager
    activated = set(approvals) == set(TEAMS)
    if activated:
        now = datetime.now(UTC)
        await session.execute(
            update(scoring_models)
            .where(scoring_models.c.status == "active")
            .values(status="retired")
        )
        await session.execute(
            update(scoring_models)
            .where(scoring_models.c.version == version)
            .values(status="active", activated_at=now)
        )
        await start_job(session, version)
        forget_active_model()  # every lead is rescored under the new model
    return Approval(version, approvals, activated)


async def start_job(session: AsyncSession, version: str) -> None:
    """Queue the rescoring of every lead under `version` (in the activating transaction)."""
    total = int(await session.scalar(select(func.count()).select_from(lead_states)) or 0)
    await session.execute(
        insert(rescore_jobs).values(
            version=version, total=total, done=0, started_at=datetime.now(UTC)
        )
    )


async def list_models(conn: AsyncConnection) -> list[dict[str, Any]]:
    approvals: dict[str, dict[str, str]] = {}
    for r in await conn.execute(select(model_approvals)):
        approvals.setdefault(r.version, {})[r.team] = r.approver_id
    jobs = {
        r.version: {"done": r.done, "total": r.total, "finished": r.finished_at is not None}
        for r in await conn.execute(select(rescore_jobs))
    }
    rows = await conn.execute(select(scoring_models).order_by(scoring_models.c.created_at))
    return [
        {
            "version": r.version,
            "status": r.status,
            "created_by": r.created_by,
            "created_at": r.created_at,
            "activated_at": r.activated_at,
            "approved_by": approvals.get(r.version, {}),
            "rescoring": jobs.get(r.version),
        }
        for r in rows
    ]
