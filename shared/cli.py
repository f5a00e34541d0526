"""The `handoff` command: run the services, migrate, manage tokens, benchmark."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import runpy
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from alembic.util import CommandError as AlembicError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from shared.auth import ROLES, TokenFileError, TokenStore
from shared.bus.local import LocalBus
from shared.bus.port import Bus, BusError
from shared.events.asyncapi import asyncapi_document
from shared.events.catalog import CATALOG
from shared.http import VERSION, build_app
from shared.migrations import MigrationError, check_owner, upgrade
from shared.observability.logging import configure_logging
from shared.problems import read_problem, snippet
from shared.process import serve_http, settle_for_serving
from shared.runtime import ServiceRuntime, bus_from_settings, check_bus
from shared.service_app import service_definition, service_module
from shared.settings import (
    SERVICES,
    DatabaseSettings,
    SettingsError,
    TokenFileSettings,
    load_settings,
    read_settings,
)

app = typer.Typer(
    help="handoff: the shared lead pipeline for marketing and sales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tokens = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(tokens, name="tokens")
# (no emoji codes: `a:b:c` or a path is printed as it is)
console = Console(stderr=True, soft_wrap=True, emoji=False)

Host = Annotated[str, typer.Option(help="Interface to bind.")]
Port = Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free one).")]
DataDir = Annotated[Path, typer.Option(envvar="HANDOFF_DATA_DIR", help="Embedded-mode data.")]


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _database_failed(exc: MigrationError, *, from_environment: bool) -> NoReturn:
    """A database a service cannot use, named as it was configured (without its password)."""
    _fail(f"{'DATABASE_URL=' if from_environment else 'database '}{exc}")


def _check_port(host: str, port: int) -> int:
    """The port to serve on (port 0: a free one, found here so that it can be announced);
    fails unless `host:port` can be listened on (bound as uvicorn binds it), before
    anything is announced or started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _fail(
                    f"{_address(host, port)} is already in use: stop what listens there or "
                    "pick --port"
                )
            _fail(f"cannot listen on {_address(host, port)}: {exc.strerror or exc}")
        bound: int = probe.getsockname()[1]
        return bound


def _address(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:8000`), as URLs write them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _base_url(host: str, port: int) -> str:
    return f"http://{_address(host, port)}"


def _check_directory(path: Path, setting: str) -> None:
    """Fail unless `path` is, or can be made, a directory this process can write in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        _fail(f"{setting}: {path} is a file, not a directory")
    except OSError as exc:
        _fail(f"{setting}: {path}: cannot create it ({exc.strerror or exc})")
    if not os.access(path, os.W_OK | os.X_OK):
        _fail(f"{setting}: {path} is not writable by this user")


def _check_bus(bus: Bus, *, in_use: str) -> None:
    """Fail now, before anything starts, if a service could not start on `bus`: `in_use`
    says what to do when the local event log is another process's."""
    if isinstance(bus, LocalBus):
        try:
            bus.check_free()
        except BusError as exc:
            _fail(f"{exc}: {in_use}")
    try:
        asyncio.run(check_bus(bus))
    except BusError as exc:
        _fail(f"KAFKA_BOOTSTRAP_SERVERS: {exc}" if not isinstance(bus, LocalBus) else str(exc))


@app.command()
def dev(host: Host = "127.0.0.1", port: Port = 8000, data_dir: DataDir = Path(".handoff")) -> None:
    """Run every service in one process on one port (SQLite files and the local event log)."""
    embedded = {
        "data_dir": data_dir,
        "env": "dev",
        "database_url": None,
        "kafka_bootstrap_servers": None,
    }  # dev is embedded whatever the environment says
    if os.environ.get("DATABASE_URL") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        console.print(
            "note: dev mode ignores DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS "
            "(use `make up` or `handoff serve` for Kafka and PostgreSQL)"
        )
    try:
        settings = {name: load_settings(name, **embedded) for name in SERVICES}
    except SettingsError as exc:
        _fail(str(exc))
    _check_directory(data_dir, "--data-dir")
    first = settings[SERVICES[0]]
    configure_logging(level=first.log_level, json=first.log_json)
    bus = LocalBus(first.local_bus_path(), partitions=first.topic_partitions)
    _check_bus(bus, in_use=f"is `handoff dev` already running with --data-dir {data_dir}?")
    port = _check_port(host, port)
    for name, s in settings.items():
        try:
            asyncio.run(upgrade(service_definition(name).migrations, s.resolved_database_url()))
        except MigrationError as exc:
            _database_failed(exc, from_environment=False)
        except AlembicError as exc:
            _fail(f"migrating {name} failed: {exc}")
    runtimes = [
        ServiceRuntime(definition=service_definition(name), settings=s, bus=bus, owns_bus=False)
        for name, s in settings.items()
    ]
    store = TokenStore(first.resolved_tokens_file())
    try:
        token = _dev_admin_token(store, data_dir)
    except TokenFileError as exc:
        _fail(f"{exc} (fix or remove the file, then start again)")
    application = build_app(
        runtimes,
        title="handoff (embedded: all services)",
        token_store=store,
        max_body_bytes=first.max_body_bytes,
        shared_bus=bus,
    )
    base = _base_url(host, port)
    console.print(f"[bold]handoff dev[/bold]: all five services on {base}")
    console.print(
        f"  API docs   {base}/docs\n  health     {base}/readyz\n  metrics    {base}/metrics"
    )
    console.print(f"  data       {data_dir.resolve()}")
    console.print(f"  admin token (dev only): [green]{token}[/green]")
    settle_for_serving(first.gc_threshold)
    serve_http(application, host=host, port=port)


def _dev_admin_token(store: TokenStore, data_dir: Path) -> str:
    """The development admin token, created on first run and kept in the data directory."""
    path = data_dir / "dev-admin-token"
    if path.exists() and store.verify(path.read_text().strip()):
        return path.read_text().strip()
    store.revoke("dev-admin")
    token = store.create(name="dev-admin", role="admin")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")],
    host: Host = "127.0.0.1",
    port: Port = 8000,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first.")] = True,
) -> None:
    """Run one service as its own process (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS).

    In dev without them: its SQLite file and the local event log in the data directory,
    which one process at a time can use (`handoff dev` runs every service in one).
    """
    try:
        settings = load_settings(service)
    except SettingsError as exc:
        _fail(str(exc))
    if settings.bus_kind == "local" or settings.database_url is None:
        _check_directory(settings.data_dir, "HANDOFF_DATA_DIR")
    configure_logging(level=settings.log_level, json=settings.log_json)
    _check_bus(
        bus_from_settings(settings),
        in_use="the local event log is one process's: run every service in one with "
        "`handoff dev`, or set KAFKA_BOOTSTRAP_SERVERS (or another HANDOFF_DATA_DIR)",
    )
    port = _check_port(host, port)
    migrations, url = service_definition(service).migrations, settings.resolved_database_url()
    try:  # without migrating too, the database must be reachable and this service's
        if migrate:
            asyncio.run(upgrade(migrations, url))
        else:
            asyncio.run(check_owner(migrations, url))
    except MigrationError as exc:
        _database_failed(exc, from_environment=settings.database_url is not None)
    except AlembicError as exc:
        _fail(f"migrating {service} failed: {exc}")
    application = service_module(service).create_app(settings)
    settle_for_serving(settings.gc_threshold)
    serve_http(application, host=host, port=port)


@app.command()
def migrate(
    services: Annotated[
        list[str] | None, typer.Argument(help="Services to migrate (default: all).")
    ] = None,
    revision: Annotated[
        str, typer.Option(help="Target revision (upgrades only: a database past it is refused).")
    ] = "head",
) -> None:
    """Apply Alembic migrations to each service's own database.

    Without `DATABASE_URL` each service's SQLite file under the data directory; with it,
    that one database, so name the one service it belongs to. Only `DATABASE_URL` (and,
    in dev, `HANDOFF_DATA_DIR`) is read: none of the services' other settings.
    """
    names = services or list(SERVICES)
    if unknown := [name for name in names if name not in SERVICES]:
        _fail(f"unknown service {unknown[0]!r}; expected one of {', '.join(SERVICES)}")
    try:
        settings = read_settings(DatabaseSettings)
    except SettingsError as exc:
        _fail(str(exc))
    if settings.database_url is not None and len(names) > 1:
        _fail(
            "DATABASE_URL is one service's database: migrate that service alone "
            f"(DATABASE_URL=... handoff migrate {names[0]})"
        )
    for name in names:
        url = settings.resolved_database_url(name)
        try:
            asyncio.run(upgrade(service_definition(name).migrations, url, revision))
        except MigrationError as exc:
            _database_failed(exc, from_environment=settings.database_url is not None)
        except AlembicError as exc:
            _fail(f"migrating {name} failed: {exc}")
        console.print(f"migrated {name} to {revision}")


def _token_store(*, writing: bool = False) -> TokenStore:
    """The token file every service reads (`HANDOFF_TOKENS_FILE`, else `tokens.json` in
    `HANDOFF_DATA_DIR`): all these commands read of the settings."""
    try:
        settings = read_settings(TokenFileSettings)
    except SettingsError as exc:
        _fail(str(exc))
    path = settings.resolved_tokens_file()
    if writing:
        setting = "HANDOFF_TOKENS_FILE" if settings.tokens_file else "HANDOFF_DATA_DIR"
        _check_directory(path.parent, setting)
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
        _fail(str(exc))
    console.print(f"created token {name!r} with role {role} in {store.path}")
    print(token)


@tokens.command("list")
def tokens_list() -> None:
    """List tokens (names, roles, teams; never the tokens themselves)."""
    store = _token_store()
    try:
        records = store.records()
    except TokenFileError as exc:
        _fail(str(exc))
    for record in records:
        print(f"{record.name}\t{record.role}\t{record.team or '-'}\t{record.created_at}")


@tokens.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token by name."""
    store = _token_store(writing=True)
    try:
        revoked = store.revoke(name)
    except TokenFileError as exc:
        _fail(str(exc))
    if not revoked:
        _fail(f"no token named {name!r}")
    console.print(f"revoked {name!r}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Benchmark in bench/ (bus, intake); further options go to it.")
    ] = "bus",
) -> None:
    """Run a benchmark from the repository's bench/ directory."""
    script = Path("bench") / f"{name}.py"
    if not script.exists():
        _fail(f"{script} not found (run from the repository root)")
    sys.argv = [str(script), *ctx.args]
    sys.path.insert(0, str(Path.cwd()))
    runpy.run_path(str(script), run_name="__main__")


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="NDJSON or CSV.")],
    url: Annotated[str, typer.Option(envvar="HANDOFF_URL", help="handoff's base URL.")] = (
        "http://127.0.0.1:8000"
    ),
    token: Annotated[str, typer.Option(envvar="HANDOFF_TOKEN", help="A writer's token.")] = "",
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv or ndjson (default: from the file's extension: .csv; .ndjson, .jsonl).",
        ),
    ] = None,
) -> None:
    """Import leads from a file, streamed to `POST /v1/leads/import` with a progress bar.

    Exit status: 0 when every row was imported; 1 when any row failed (the good rows are
    imported all the same, and the failures listed); 2 when the file was not sent or the
    server refused it.
    """
    if not token:
        _fail("a token is needed: --token or HANDOFF_TOKEN (handoff tokens create ...)")
    kind = _IMPORT_FORMATS.get((file_format or _FORMAT_OF.get(file.suffix.lower(), "")).lower())
    if kind is None:
        if file_format:
            _fail(f"--format {file_format!r}: expected csv or ndjson")
        _fail(
            f"cannot tell whether {file.name} is CSV or NDJSON from its extension: "
            "name it .csv, .ndjson or .jsonl, or pass --format csv|ndjson"
        )
    summary = _upload(file, f"{url.rstrip('/')}/v1/leads/import", token, kind)
    table = Table(title=f"import of {file.name}")
    for column in ("rows", "created", "updated", "unchanged", "failed"):
        table.add_column(column, justify="right")
    table.add_row(
        *(f"{summary[c]:,}" for c in ("rows", "created", "updated", "unchanged", "failed"))
    )
    console.print(table)
    _print_row_errors(summary)
    if summary["failed"]:
        imported = summary["created"] + summary["updated"] + summary["unchanged"]
        console.print(
            f"{summary['failed']:,} of {summary['rows']:,} rows failed; "
            f"the other {imported:,} were imported"
        )
        raise typer.Exit(1)


_ERRORS_SHOWN = 20


def _print_row_errors(summary: dict[str, Any]) -> None:
    """The first errors of the import's summary, and how many more there were."""
    errors = summary["errors"]
    for error in errors[:_ERRORS_SHOWN]:
        line = f"  line {error['line']}: {error['field']}: {error['reason']}"
        console.print(line, markup=False)
    if len(errors) > _ERRORS_SHOWN:
        console.print(f"  ... {len(errors) - _ERRORS_SHOWN:,} more errors not shown")
    if summary.get("errors_truncated") and errors:
        console.print(
            "  ... and more errors the server did not keep (errors_truncated: it keeps the "
            "first lines' errors, up to HANDOFF_IMPORT_MAX_ERRORS)"
        )
    elif summary.get("errors_truncated"):
        console.print("  (the server kept no errors to show: HANDOFF_IMPORT_MAX_ERRORS is 0)")


def _upload(file: Path, endpoint: str, token: str, kind: str) -> dict[str, Any]:
    size = file.stat().st_size
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"uploading {file.name}", total=size)

        def chunks() -> Iterator[bytes]:
            with file.open("rb") as source:
                while chunk := source.read(256 * 1024):
                    progress.advance(task, len(chunk))
                    yield chunk

        try:
            response = httpx.post(
                endpoint,
                content=chunks(),
                timeout=httpx.Timeout(30, read=3600),  # a big import takes a while
                headers={"Authorization": f"Bearer {token}", "Content-Type": kind},
            )
        except httpx.HTTPError as exc:
            _fail(f"could not reach {endpoint}: {exc}")
    if response.status_code != 200:
        _fail(f"import refused ({response.status_code}): {_problem_text(response)}")
    try:
        result: dict[str, Any] = response.json()
    except ValueError:
        _fail(f"{endpoint} answered 200 with no import summary: {snippet(response.text)}")
    return result


_IMPORT_FORMATS = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
_FORMAT_OF = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}


def _problem_text(response: httpx.Response) -> str:
    """What an error answer says (`read_problem`), or its status's phrase."""
    return read_problem(response.text) or response.reason_phrase


@app.command()
def demo(
    url: Annotated[str, typer.Option(envvar="HANDOFF_URL", help="handoff's base URL.")] = (
        "http://127.0.0.1:8000"
    ),
    token: Annotated[
        str,
        typer.Option(
            envvar="HANDOFF_TOKEN",
            help="An admin's token (default: the one `handoff dev` keeps in its data directory).",
        ),
    ] = "",
    data_dir: DataDir = Path(".handoff"),
    leads: Annotated[int, typer.Option(min=1, max=100_000, help="How many people.")] = 200,
    seed: Annotated[int, typer.Option(help="The same seed makes the same people.")] = 7,
) -> None:
    """Fill a running handoff with made-up leads, accounts and activities to look at."""
    from shared import demo as demo_data  # (Faker loads only for this command)

    if not token:
        saved = data_dir / "dev-admin-token"
        if not saved.exists():
            _fail(
                f"a token is needed: --token or HANDOFF_TOKEN (no {saved}: is `handoff dev` "
                "running with this --data-dir?)"
            )
        token = saved.read_text().strip()
    made = demo_data.plan(leads, seed=seed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as bars:

        def progress(what: str, total: int) -> Any:
            task = bars.add_task(what, total=total)
            return lambda n: bars.advance(task, n)

        try:
            summary = demo_data.run(url, token, made, progress=progress)
        except demo_data.DemoError as exc:
            _fail(str(exc))
    imported = summary.imported
    table = Table(title=f"demo data sent to {url}")
    for column in ("what", "created", "updated or unchanged", "failed"):
        table.add_column(column, justify="right" if column != "what" else "left")
    table.add_row(
        "marketing leads (import)",
        f"{imported['created']:,}",
        f"{imported['updated'] + imported['unchanged']:,}",
        f"{imported['failed']:,}",
    )
    table.add_row(
        "sales' leads", f"{summary.sales['created']:,}", f"{summary.sales['updated']:,}", "0"
    )
    table.add_row("activities", f"{sum(summary.activities.values()):,}", "", "0")
    console.print(table)
    console.print(
        f"{summary.companies} companies; activities: "
        + ", ".join(f"{kind} {n}" for kind, n in summary.activities.most_common())
    )
    if summary.sample_lead:
        console.print(f"a lead to look at: {url.rstrip('/')}/v1/leads/{summary.sample_lead}")


@app.command()
def asyncapi(
    output: Annotated[Path | None, typer.Option(help="Write here, not stdout.")] = None,
) -> None:
    """Print the event catalog as an AsyncAPI 3.0 document (JSON)."""
    document = json.dumps(asyncapi_document(CATALOG, version=VERSION), indent=2) + "\n"
    if output is None:
        print(document, end="")
    else:
        try:
            output.write_text(document)
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror or exc}")
        console.print(f"wrote {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
