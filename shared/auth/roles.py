"""The FastAPI dependency admitting callers by the role of their bearer token."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth.principal import Principal, Role
from shared.auth.token_file import TokenFileError
from shared.auth.token_store import TokenStore
from shared.problems import Problem

_bearer = HTTPBearer(auto_error=False)
RoleCheck = Callable[..., Coroutine[Any, Any, Principal]]


def require_roles(*roles: Role) -> RoleCheck:
    """A dependency admitting callers with one of `roles` (admins always); 401 vs 403."""
    allowed = frozenset(roles) | {"admin"}

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = _authenticated(request, credentials)
        if principal.role not in allowed:
            raise Problem(
                403,
                "Forbidden",
                f"role {principal.role!r} may not do this; allowed: {', '.join(sorted(allowed))}",
                errors=[{"field": "Authorization", "reason": f"role {principal.role} not allowed"}],
            )
        return principal

    check.roles = allowed  # type: ignore[attr-defined]  # read by the route audit
    return check


def _authenticated(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller the bearer token names: 401 without a known token, 503 while the token
    file cannot be read."""
    if credentials is None:
        raise _unauthorized(
            "send a bearer token: Authorization: Bearer <token>", "missing bearer token"
        )
    store: TokenStore = request.app.state.token_store
    try:
        principal = store.verify(credentials.credentials)
    except TokenFileError:  # (logged by the store, once per change of the file)
        raise Problem(
            503,
            "Service Unavailable",
            "bearer tokens cannot be checked: the server's token file is unreadable",
            headers={"Retry-After": "30"},
            errors=[{"field": "Authorization", "reason": "token file unreadable"}],
        ) from None
    if principal is None:
        raise _unauthorized("the bearer token is unknown or revoked", "unknown or revoked token")
    return principal


def _unauthorized(detail: str, reason: str) -> Problem:
    """A 401 with the bearer challenge, naming the `Authorization` header and why."""
    return Problem(
        401,
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": "Bearer"},
        errors=[{"field": "Authorization", "reason": reason}],
    )
