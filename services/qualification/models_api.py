"""Scoring models over HTTP: drafts, the two-team sign-off, the active model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from services.qualification.model_registry import (
    ModelProblem,
    approve,
    create_draft,
    list_models,
)
from services.qualification.scoring_model import InvalidScoringModel
from shared.auth import Principal, require_roles
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
        async with runtime.db.transaction() as session:
            model = await create_draft(session, document, author=who.id)
    except InvalidScoringModel as exc:
        errors = [{"field": p.field, "reason": p.message} for p in exc.problems]
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
        async with runtime.db.transaction() as session:
            approval = await approve(session, version, manager=who.id, team=who.team)
    except ModelProblem as exc:
        raise _problem(exc) from None
    return {
        "version": version,
        "approved_by": approval.approved_by,
        "status": "active" if approval.activated else "draft",
    }


def _problem(exc: ModelProblem) -> Problem:
    title = {403: "Forbidden", 404: "Not Found", 409: "Conflict"}.get(exc.status, "Error")
    return Problem(
        exc.status, title, exc.reason, errors=[{"field": exc.field, "reason": exc.reason}]
    )
