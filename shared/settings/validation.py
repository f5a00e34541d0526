"""How setting values are checked: the value types with their validators, and the rule every
reader of the database URL applies outside dev."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

DEFAULT_DB_PASSWORDS = frozenset({"handoff", "postgres", "password", "changeme"})

Environment = Literal["dev", "test", "prod"]

# The database URL schemes handoff takes, and the driver each runs on.
DATABASE_DRIVERS = {
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
}


def _named_path(value: object) -> object:
    # (an empty variable would be the working directory, `.`, without a word)
    if isinstance(value, str) and not value.strip():
        raise ValueError("empty: unset it for the default, or name a path")
    return value


def _drivable_database_url(value: str | None) -> str | None:
    """A URL handoff can drive: PostgreSQL through asyncpg, SQLite through aiosqlite
    (`postgresql://` and `sqlite://`, as providers hand them out, are read so)."""
    if value is None:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError("not a database URL (postgresql+asyncpg://user:pw@host/db)") from None
    driver = DATABASE_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"{url.drivername!r} is not supported: use postgresql+asyncpg://... "
            "or sqlite+aiosqlite:///path"
        )
    url = url.set(drivername=driver)
    if driver == "postgresql+asyncpg" and "sslmode" in url.query:
        # libpq's parameter, in the URLs providers hand out; asyncpg calls it `ssl`
        mode = url.query["sslmode"]
        url = url.difference_update_query(["sslmode"]).update_query_dict(
            {"ssl": mode if isinstance(mode, str) else mode[-1]}
        )
    return url.render_as_string(hide_password=False)


def check_database_outside_dev(env: Environment, database_url: str | None) -> None:
    """Outside dev: PostgreSQL (a SQLite file is dev only), in prod not on a default password."""
    if env == "dev":
        return
    if database_url is None or database_url.startswith("sqlite"):
        raise ValueError(
            "DATABASE_URL: a PostgreSQL database is required outside dev (embedded SQLite "
            "is dev only)"
        )
    if env == "prod" and _db_password(database_url) in DEFAULT_DB_PASSWORDS:
        raise ValueError("DATABASE_URL: a default database password is refused in prod")


def _db_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).password


def listed_names(value: Any) -> Any:
    """A list setting from the environment: comma-separated (`phone, job_title`) or a JSON
    array (`["phone", "job_title"]`); empty: none."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON array: {exc}") from None
    return [name.strip() for name in text.split(",") if name.strip()]


SettingPath = Annotated[Path, BeforeValidator(_named_path)]
DatabaseUrl = Annotated[str | None, AfterValidator(_drivable_database_url)]
