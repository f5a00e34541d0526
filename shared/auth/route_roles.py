"""What a route declares about who may call it (roles, or a signature it verifies itself),
and the audit that every `/v1` route declares it."""

from __future__ import annotations

from typing import Any


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
