"""Bearer tokens with roles: high-entropy, stored only as SHA-256 hashes.

Tokens live in one JSON file (`HANDOFF_TOKENS_FILE`) that every service reads, the way a
Kubernetes secret is mounted into every pod; `handoff tokens create` writes it. SHA-256 is
the right hash here: a token has 256 bits of entropy, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.problems import Problem

Role = Literal["admin", "manager", "marketing", "sales", "integration", "viewer"]
ROLES: tuple[str, ...] = get_args(Role)
Team = Literal["marketing", "sales"]
TOKEN_PREFIX = "hnd_"  # noqa: S105 - a prefix, not a secret: lets secret scanners spot leaks


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name is the user id recorded as the actor."""

    id: str
    role: str
    team: str | None = None


@dataclass(frozen=True)
class TokenRecord:
    name: str
    role: str
    team: str | None
    sha256: str
    created_at: str


class TokenStore:
    """Reads (and, for the CLI, writes) the hashed-token file; reloads when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._by_hash: dict[str, TokenRecord] = {}

    def create(self, *, name: str, role: str, team: str | None = None) -> str:
        """Add a token and return its plaintext (shown once, never stored)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        if team not in (None, "marketing", "sales"):
            raise ValueError(f"team must be marketing or sales; got {team!r}")
        records = self._read()
        if any(r.name == name for r in records):
            raise ValueError(f"a token named {name!r} exists; revoke it first")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        records.append(
            TokenRecord(
                name, role, team, _digest(token), datetime.now(UTC).isoformat(timespec="seconds")
            )
        )
        self._write(records)
        return token

    def revoke(self, name: str) -> bool:
        records = self._read()
        kept = [r for r in records if r.name != name]
        self._write(kept)
        return len(kept) != len(records)

    def records(self) -> list[TokenRecord]:
        return self._read()

    def verify(self, token: str) -> Principal | None:
        """The principal behind a presented token, or None."""
        self._reload_if_changed()
        digest = _digest(token)
        for known, record in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return Principal(id=record.name, role=record.role, team=record.team)
        return None

    def _reload_if_changed(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._by_hash, self._mtime = {}, None
            return
        if mtime != self._mtime:
            self._by_hash = {r.sha256: r for r in self._read()}
            self._mtime = mtime

    def _read(self) -> list[TokenRecord]:
        if not self.path.exists():
            return []
        raw = json.loads(self.path.read_text())
        return [TokenRecord(**item) for item in raw.get("tokens", [])]

    def _write(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"tokens": [asdict(r) for r in records]}, out, indent=2)
        tmp.replace(self.path)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_bearer = HTTPBearer(auto_error=False)
RoleCheck = Callable[..., Coroutine[Any, Any, Principal]]


def require_roles(*roles: Role) -> RoleCheck:
    """A dependency admitting callers with one of `roles` (admins always); 401 vs 403."""
    allowed = frozenset(roles) | {"admin"}

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise Problem(
                401,
                "Unauthorized",
                "send a bearer token: Authorization: Bearer <token>",
                headers=challenge,
                errors=[{"field": "Authorization", "reason": "missing bearer token"}],
            )
        store: TokenStore = request.app.state.token_store
        principal = store.verify(credentials.credentials)
        if principal is None:
            raise Problem(
                401,
                "Unauthorized",
                "the bearer token is unknown or revoked",
                headers=challenge,
                errors=[{"field": "Authorization", "reason": "unknown or revoked token"}],
            )
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


def declared_roles(route: Any) -> frozenset[str] | None:
    """The roles a route admits (from its `require_roles` dependency), or None if undeclared."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        roles = getattr(dependant.call, "roles", None)
        if roles is not None:
            return frozenset(roles)
        pending.extend(dependant.dependencies)
    return None


def routes_without_roles(routes: Any) -> list[str]:
    """`METHOD path` of every `/v1` route that does not declare who may call it."""
    missing: list[str] = []
    for route in routes:
        path = getattr(route, "path", "")
        if path.startswith("/v1") and hasattr(route, "dependant") and declared_roles(route) is None:
            missing.extend(f"{m} {path}" for m in sorted(route.methods))
    return missing


async def authenticated_by_signature() -> None:
    """Marks a route whose caller proves itself by a signature the route verifies itself."""


authenticated_by_signature.roles = frozenset({"signature"})  # type: ignore[attr-defined]
