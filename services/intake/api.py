"""Intake's HTTP API: capture leads, import files, record activities, erase."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import idempotency
from services.intake.activities import LeadMismatch, UnknownLead, record_activity
from services.intake.canonical import ActivityIn, LeadCapture, LeadSource
from services.intake.erasure import erase_lead
from services.intake.import_job import run_import
from services.intake.importing import SALES_REFUSED, RowPolicy, format_of
from services.intake.lead_view import lead_view
from services.intake.leads import CaptureOutcome, capture_batch
from shared.auth.principal import Principal
from shared.auth.roles import require_roles
from shared.http import runtime_of
from shared.problems import Problem
from shared.runtime import ServiceRuntime
from shared.settings.services import IntakeSettings

router = APIRouter(tags=["intake"])
Runtime = Annotated[ServiceRuntime, runtime_of("intake")]
Writer = Annotated[Principal, Depends(require_roles("integration", "marketing", "sales"))]
Reader = Annotated[
    Principal, Depends(require_roles("manager", "integration", "marketing", "sales"))
]
# (a privacy tool or the CRM carrying out a deletion request holds an integration token)
Eraser = Annotated[Principal, Depends(require_roles("manager", "integration"))]


def _settings(runtime: ServiceRuntime) -> IntakeSettings:
    assert isinstance(runtime.settings, IntakeSettings)
    return runtime.settings


@router.post(
    "/v1/leads",
    status_code=201,
    responses={
        200: {"description": "an existing lead was updated"},
        409: {"description": "Idempotency-Key reused with another body, or an identity conflict"},
        422: {"description": "invalid lead"},
    },
)
async def capture_lead(
    lead: LeadCapture,
    request: Request,
    runtime: Runtime,
    who: Writer,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Capture a lead: create it (201), or update the person it already is (200)."""
    body = await request.body()
    body_hash = idempotency.request_hash(body)
    sales_owned = _settings(runtime).sales_owned_fields
    if "source" not in lead.model_fields_set:
        lead = lead.model_copy(update={"source": default_source(who)})
    _check_source(who, lead.source)

    async def work(session: AsyncSession) -> tuple[idempotency.StoredAnswer, bool]:
        if idempotency_key:
            earlier = await idempotency.previous_answer(
                session,
                principal=who.id,
                key=idempotency_key,
                body_hash=body_hash,
                legacy_hash=idempotency.raw_hash(body),
            )
            if earlier is not None:
                return earlier, True
        (outcome,) = await capture_batch(session, runtime.outbox, [lead], sales_owned=sales_owned)
        answer = _answer(outcome)
        if idempotency_key:
            await idempotency.remember_answer(
                session, principal=who.id, key=idempotency_key, body_hash=body_hash, answer=answer
            )
        return answer, False

    # A concurrent capture of the same new person (or the same key) loses the race on a
    # unique index; run again, it finds the winner's lead (or stored answer).
    answer, replayed = await runtime.db.run(work)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


def default_source(who: Principal) -> LeadSource:
    """The source of a lead whose capture names none: what a salesperson enters is
    sales-generated (and so owns the sales-owned fields); anyone else's is marketing's."""
    return "sales" if who.role == "sales" else "marketing"


def may_capture_sales(who: Principal) -> bool:
    """Marketing tokens capture marketing leads: a sales-generated lead skips scoring."""
    return who.role != "marketing"


def _row_policy(who: Principal) -> RowPolicy:
    """An import's rows follow the same rules as single captures by the same caller."""
    return RowPolicy(default_source=default_source(who), sales_allowed=may_capture_sales(who))


def _check_source(who: Principal, source: str) -> None:
    if source == "sales" and not may_capture_sales(who):
        raise Problem(
            403,
            "Forbidden",
            SALES_REFUSED,
            errors=[
                {"field": "source", "reason": "sales needs a sales, integration or admin token"}
            ],
        )


def _answer(outcome: CaptureOutcome) -> idempotency.StoredAnswer:
    if outcome.error is not None:
        error = outcome.error
        raise Problem(
            409 if error.conflict else 422,
            "Identity conflict" if error.conflict else "Invalid lead",
            error.reason,
            errors=[{"field": error.field, "reason": error.reason}],
        )
    return idempotency.StoredAnswer(201 if outcome.created else 200, outcome.as_json())


@router.get("/v1/leads/{lead_id}")
async def get_lead(lead_id: uuid.UUID, runtime: Runtime, who: Reader) -> dict[str, Any]:
    """A lead's profile, account and external ids (personal data: not for viewers)."""
    async with runtime.db.engine.connect() as conn:
        view = await lead_view(conn, str(lead_id))
    if view is None:
        raise Problem(
            404,
            "Not Found",
            f"no lead {lead_id}",
            errors=[{"field": "lead_id", "reason": "no such lead"}],
        )
    return view


@router.delete("/v1/leads/{lead_id}", status_code=204, responses={404: {}})
async def erase(lead_id: uuid.UUID, runtime: Runtime, who: Eraser) -> Response:
    """Erase a lead's personal data here and tell every service to forget it."""
    async with runtime.db.transaction() as session:
        erased = await erase_lead(session, runtime.outbox, str(lead_id), requested_by=who.id)
    if erased is None:
        raise Problem(
            404,
            "Not Found",
            f"no lead {lead_id}",
            errors=[{"field": "lead_id", "reason": "no such lead"}],
        )
    return Response(status_code=204)


@router.post(
    "/v1/leads/import",
    responses={415: {}, 422: {}},
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            }
        }
    },
)
async def import_leads(request: Request, runtime: Runtime, who: Writer) -> dict[str, Any]:
    """Import NDJSON or CSV, streamed: good rows are kept, bad rows reported by line.

    A row without `source` is the caller's (a sales token's rows are sales-generated); a
    marketing token's row naming `sales` is refused, as a single capture would be.
    """
    fmt = format_of(request.headers.get("content-type", ""))
    if fmt is None:
        raise Problem(
            415,
            "Unsupported Media Type",
            "send application/x-ndjson or text/csv",
            errors=[{"field": "Content-Type", "reason": "not an import format"}],
        )
    summary = await run_import(runtime, request.stream(), fmt, _settings(runtime), _row_policy(who))
    if summary.rows == 0:
        raise Problem(
            422,
            "Empty import",
            "the file has no rows",
            errors=[{"field": "body", "reason": "no rows"}],
        )
    return summary.as_json()


@router.post("/v1/activities", status_code=202, responses={404: {}, 409: {}, 422: {}})
async def record(activity: ActivityIn, runtime: Runtime, who: Writer) -> dict[str, Any]:
    """Record what a lead (or an anonymous visitor) did."""
    try:
        async with runtime.db.transaction() as session:
            recorded = await record_activity(session, runtime.outbox, activity)
    except UnknownLead as exc:
        status, title = (
            (409, "Different leads") if isinstance(exc, LeadMismatch) else (404, "Unknown lead")
        )
        raise Problem(
            status, title, exc.reason, errors=[{"field": exc.field, "reason": exc.reason}]
        ) from None
    return recorded.as_json()
