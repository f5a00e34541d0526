"""Scoring models over HTTP: drafts, the two-team sign-off, the active model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from services.qualification.model_registry import (
    ModelProblem,
    active_model,
    approve,
    create_draft,
    list_models,
    parsed,
)
from services.qualification.models import scoring_models
from services.qualification.scoring_model import InvalidScoringModel
from services.qualification.simulation import simulate
from shared.auth.principal import Principal
from shared.auth.roles import require_roles
from shared.http import runtime_of
from shared.problems import Problem
from shared.runtime import ServiceRuntime

router = APIRouter(tags=["qualification: scoring models"])
Runtime = Annotated[ServiceRuntime, runtime_of("qualification")]
Reader = Annotated[Principal, Depends(require_roles("manager", "marketing", "sales", "viewer"))]
Author = Annotated[Principal, Depends(require_roles("manager", "marketing", "sales"))]
Manager = Annotated[Principal, Depends(require_roles("manager"))]


@router.get("/v1/scoring-models")
async def models(runtime: Runtime, who: Reader) -> list[dict[str, Any]]:
    """Every model version with its status and who signed it off."""
    async with runtime.db.engine.connect() as conn:
        return await list_models(conn)


@router.post(
    "/v1/scoring-models",
    status_code=201,
    responses={409: {}, 422: {}},
    openapi_extra={
        "requestBody": {
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            }
        }
    },
)
async def add_model(request: Request, runtime: Runtime, who: Author) -> dict[str, Any]:
    """Propose a model version (YAML or JSON): a draft until both teams approve it."""
    document = (await request.body()).decode("utf-8", "replace")
    try:
        model = await runtime.db.run(  # a racing twin loses on the key, retries, gets 409
            lambda session: create_draft(session, document, author=who.id)
        )
    except InvalidScoringModel as exc:
        errors = [{"field": p.field or "body", "reason": p.message} for p in exc.problems]
        raise Problem(422, "Invalid scoring model", str(exc), errors=errors) from None
    except ModelProblem as exc:
        raise _problem(exc) from None
    return {
        "version": model.version,
        "status": "draft",
        "needs_approval_from": ["marketing manager", "sales manager"],
    }


@router.post("/v1/scoring-models/{version}/approve", responses={403: {}, 404: {}, 409: {}})
async def approve_model(version: str, runtime: Runtime, who: Manager) -> dict[str, Any]:
    """A marketing or sales manager signs the draft off; the second sign-off activates it."""
    try:
        approval = await runtime.db.run(  # racing activations meet on the one-active index
            lambda session: approve(session, version, manager=who.id, team=who.team)
        )
    except ModelProblem as exc:
        raise _problem(exc) from None
    if approval.activated and (wake := runtime.state.get("rescore_wake")) is not None:
        wake.set()  # every lead is rescored under the new model, in the background
    return {
        "version": version,
        "approved_by": approval.approved_by,
        "status": "active" if approval.activated else "draft",
    }


@router.post("/v1/scoring-models/{version}/simulate", responses={404: {}})
async def simulate_model(version: str, runtime: Runtime, who: Author) -> dict[str, Any]:
    """Replay the stored history under this model and the active one: MQLs per week, and
    how many of those later reached SAL, SQL and won."""
    async with runtime.db.engine.connect() as conn:
        document = await conn.scalar(
            select(scoring_models.c.document).where(scoring_models.c.version == version)
        )
        if document is None:
            raise Problem(
                404,
                "Not Found",
                f"no scoring model {version!r}",
                errors=[{"field": "version", "reason": "no such model"}],
            )
    async with runtime.db.transaction() as session:
        active = await active_model(session)
    async with runtime.db.engine.connect() as conn:
        return await simulate(conn, parsed(version, document), active)


def _problem(exc: ModelProblem) -> Problem:
    title = {403: "Forbidden", 404: "Not Found", 409: "Conflict"}.get(exc.status, "Error")
    return Problem(
        exc.status, title, exc.reason, errors=[{"field": exc.field, "reason": exc.reason}]
    )
