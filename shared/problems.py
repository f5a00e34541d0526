"""RFC 9457 problem details for every error a handoff API returns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.validation_errors import error_reason

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger(__name__)


class Problem(Exception):
    """An error the client can act on; rendered as `application/problem+json`.

    Args:
        status: HTTP status code.
        title: short, stable summary of the problem type.
        detail: what happened this time, in words a user understands.
        errors: per-field problems: `{"field": "email", "reason": "..."}`.
        **extensions: extra members (e.g. `allowed` transitions).
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        errors: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://handoff.dev/problems/{_slug(self.title)}",
            "title": self.title,
            "status": self.status,
            "instance": instance,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def unexpected_error(path: str) -> Problem:
    """Log the exception being handled and say so, without its details, as a 500."""
    log.exception("unhandled error", path=path)
    return Problem(
        500, "Internal Server Error", "An unexpected error occurred; it has been logged."
    )


def problem_of(exc: Exception) -> Problem | None:
    """The problem an error is answered with: ours as raised, request validation as a 422
    naming each field, HTTP errors by their status; None for anything else (unexpected:
    a logged 500, see `unexpected_error`)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        errors = [
            {
                "field": "body"
                if err.get("type") == "json_invalid"
                else _field_path(err.get("loc", ())),
                "reason": error_reason(err),
            }
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return Problem(422, "Invalid request", detail, errors=errors)
    if isinstance(exc, StarletteHTTPException):
        title = _TITLES.get(exc.status_code) or HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else ""
        errors = [{"field": "body", "reason": detail}] if exc.status_code == 413 else []
        return Problem(
            exc.status_code, title, detail, headers=dict(exc.headers or {}), errors=errors
        )
    return None


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error (ours, validation, HTTP, unexpected) as problem+json."""

    async def on_known(request: Request, exc: Exception) -> JSONResponse:
        problem = problem_of(exc)
        assert problem is not None  # (registered for the classes it knows)
        return problem_response(problem, request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # (errors inside the request shell are answered there, with the same problem)
        return problem_response(unexpected_error(request.url.path), request)

    for known in (Problem, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(known, on_known)
    app.add_exception_handler(Exception, on_unexpected)


_TITLES = {413: "Content Too Large"}  # RFC 9110's name; older Pythons say "Request Entity..."


def _field_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def _slug(title: str) -> str:
    return "-".join(title.lower().split())


def read_problem(text: str) -> str:
    """What an error answer says, for a person at a terminal: a problem's detail (else its
    title) and its field errors, one a line; any other text (a proxy's HTML page, say)
    shortened to a line."""
    try:
        problem = json.loads(text)
    except ValueError:
        return snippet(text)
    if not isinstance(problem, dict):
        return snippet(text)
    lines = [str(problem.get("detail") or problem.get("title") or "")]
    errors = problem.get("errors")
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            lines.append(f"  {error.get('field')}: {error.get('reason')}")
    return "\n".join(line for line in lines if line)


def snippet(text: str, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters of it."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."
