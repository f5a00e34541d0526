"""Whether a file is a SQLite database, checked before one is opened or made."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from shared.migration_errors import MigrationError, not_sqlite, shown

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def is_sqlite_file(path: Path) -> bool:
    """False when `path` holds something that is not a SQLite database (none, or an empty
    file, is one SQLite makes)."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return True
    return not head or head == SQLITE_HEADER


def check_sqlite_file(url: str) -> None:
    """A SQLite URL's file must be one (or not yet exist): its directory is made here."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if path.is_dir():
        raise MigrationError(shown(url), f"{path} is a directory, not a SQLite file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MigrationError(shown(url), f"cannot create {path.parent}: {exc.strerror}") from exc
    try:
        sqlite = is_sqlite_file(path)
    except OSError as exc:
        raise MigrationError(shown(url), f"cannot read {path}: {exc.strerror}") from exc
    if not sqlite:
        raise MigrationError(shown(url), not_sqlite(path))
