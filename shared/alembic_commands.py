"""Alembic's config for one service, and its upgrade command (one at a time in a process)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

# Alembic's `context` is one per process: one command at a time in a process.
_ALEMBIC = threading.Lock()


def alembic_config(migrations: Path, url: str) -> Config:
    """An Alembic config for one service's migrations directory and database URL."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def run_upgrade(config: Config, revision: str) -> None:
    """Alembic's upgrade to `revision`, once no other Alembic command runs in the process."""
    with _ALEMBIC:
        command.upgrade(config, revision)
