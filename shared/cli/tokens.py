"""`handoff tokens`: create, list and revoke the API tokens every service reads."""

from __future__ import annotations

from typing import Annotated

import typer

from shared.auth.principal import ROLES
from shared.auth.token_file import TokenFileError
from shared.auth.token_store import TokenStore
from shared.cli.console import console, fail
from shared.cli.options import check_directory
from shared.settings.base import TokenFileSettings
from shared.settings.loading import SettingsError, read_settings

tokens = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def _token_store(*, writing: bool = False) -> TokenStore:
    """The token file every service reads (`HANDOFF_TOKENS_FILE`, else `tokens.json` in
    `HANDOFF_DATA_DIR`): all these commands read of the settings."""
    try:
        settings = read_settings(TokenFileSettings)
    except SettingsError as exc:
        fail(str(exc))
    path = settings.resolved_tokens_file()
    if writing:
        setting = "HANDOFF_TOKENS_FILE" if settings.tokens_file else "HANDOFF_DATA_DIR"
        check_directory(path.parent, setting)
    return TokenStore(path)


@tokens.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")],
    name: Annotated[str, typer.Option(help="Who or what holds the token (the actor id).")],
    team: Annotated[
        str | None, typer.Option(help="marketing or sales (required for managers).")
    ] = None,
) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    if role == "manager" and team is None:
        raise typer.BadParameter(
            "required for the manager role: marketing or sales (a manager without a team "
            "cannot sign scoring models off)",
            param_hint="--team",
        )
    store = _token_store(writing=True)
    try:
        token = store.create(name=name, role=role, team=team)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"created token {name!r} with role {role} in {store.path}")
    print(token)


@tokens.command("list")
def tokens_list() -> None:
    """List tokens (names, roles, teams; never the tokens themselves)."""
    store = _token_store()
    try:
        records = store.records()
    except TokenFileError as exc:
        fail(str(exc))
    for record in records:
        print(f"{record.name}\t{record.role}\t{record.team or '-'}\t{record.created_at}")


@tokens.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token by name."""
    store = _token_store(writing=True)
    try:
        revoked = store.revoke(name)
    except TokenFileError as exc:
        fail(str(exc))
    if not revoked:
        fail(f"no token named {name!r}")
    console.print(f"revoked {name!r}")
