"""The console every `handoff` command writes to, and its one-line `error:` exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from shared.migration_errors import MigrationError

# (no emoji codes: `a:b:c` or a path is printed as it is)
console = Console(stderr=True, soft_wrap=True, emoji=False)


def fail(message: str) -> NoReturn:
    """Print `error: <message>` and exit with status 2."""
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def database_failed(exc: MigrationError, *, from_environment: bool) -> NoReturn:
    """A database a service cannot use, named as it was configured (without its password)."""
    fail(f"{'DATABASE_URL=' if from_environment else 'database '}{exc}")
