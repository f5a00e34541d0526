"""Who is calling, and the roles a caller may have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Role = Literal["admin", "manager", "marketing", "sales", "integration", "viewer"]
ROLES: tuple[str, ...] = get_args(Role)
Team = Literal["marketing", "sales"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name is the user id recorded as the actor."""

    id: str
    role: str
    team: str | None = None
