"""Options several `handoff` commands share, and the check of a directory one names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from shared.cli.console import fail

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one).")]
DataDir = Annotated[Path, typer.Option(envvar="HANDOFF_DATA_DIR", help="Embedded-mode data.")]


def check_directory(path: Path, setting: str) -> None:
    """Fail unless `path` is, or can be made, a directory this process can write in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        fail(f"{setting}: {path} is a file, not a directory")
    except OSError as exc:
        fail(f"{setting}: {path}: cannot create it ({exc.strerror or exc})")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"{setting}: {path} is not writable by this user")
