"""`handoff dev` and `handoff serve`: run every service in one process, or one service."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from pathlib import Path
from typing import Annotated

import typer
from alembic.util import CommandError as AlembicError

from shared.auth.token_file import TokenFileError
from shared.auth.token_store import TokenStore
from shared.bus.local import LocalBus
from shared.bus.port import Bus, BusError
from shared.cli.console import console, database_failed, fail
from shared.cli.options import DataDir, Host, Port, check_directory
from shared.http import build_app
from shared.migration_errors import MigrationError
from shared.migrations import check_owner, upgrade
from shared.observability.logging import configure_logging
from shared.process import serve_http, settle_for_serving
from shared.runtime import ServiceRuntime, bus_from_settings, check_bus
from shared.service_app import service_definition, service_module
from shared.settings.base import ServiceSettings
from shared.settings.loading import SettingsError, load_settings
from shared.settings.services import SERVICES


def dev(host: Host = "127.0.0.1", port: Port = 8000, data_dir: DataDir = Path(".handoff")) -> None:
    """Run every service in one process on one port (SQLite files and the local event log)."""
    settings = _embedded_settings(data_dir)
    check_directory(data_dir, "--data-dir")
    first = settings[SERVICES[0]]
    configure_logging(level=first.log_level, json=first.log_json)
    bus = LocalBus(first.local_bus_path(), partitions=first.topic_partitions)
    _check_bus(bus, in_use=f"is `handoff dev` already running with --data-dir {data_dir}?")
    port = _check_port(host, port)
    _migrate_embedded(settings)
    runtimes = [
        ServiceRuntime(definition=service_definition(name), settings=s, bus=bus, owns_bus=False)
        for name, s in settings.items()
    ]
    store = TokenStore(first.resolved_tokens_file())
    try:
        token = _dev_admin_token(store, data_dir)
    except TokenFileError as exc:
        fail(f"{exc} (fix or remove the file, then start again)")
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


def _embedded_settings(data_dir: Path) -> dict[str, ServiceSettings]:
    """Every service's settings in embedded mode, whatever the environment says."""
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
        return {name: load_settings(name, **embedded) for name in SERVICES}
    except SettingsError as exc:
        fail(str(exc))


def _migrate_embedded(settings: dict[str, ServiceSettings]) -> None:
    """Bring every service's SQLite file up to its latest migration."""
    for name, s in settings.items():
        try:
            asyncio.run(upgrade(service_definition(name).migrations, s.resolved_database_url()))
        except MigrationError as exc:
            database_failed(exc, from_environment=False)
        except AlembicError as exc:
            fail(f"migrating {name} failed: {exc}")


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
        fail(str(exc))
    if settings.bus_kind == "local" or settings.database_url is None:
        check_directory(settings.data_dir, "HANDOFF_DATA_DIR")
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
        database_failed(exc, from_environment=settings.database_url is not None)
    except AlembicError as exc:
        fail(f"migrating {service} failed: {exc}")
    application = service_module(service).create_app(settings)
    settle_for_serving(settings.gc_threshold)
    serve_http(application, host=host, port=port)


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
                fail(
                    f"{_address(host, port)} is already in use: stop what listens there or "
                    "pick --port"
                )
            fail(f"cannot listen on {_address(host, port)}: {exc.strerror or exc}")
        bound: int = probe.getsockname()[1]
        return bound


def _address(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:8000`), as URLs write them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _base_url(host: str, port: int) -> str:
    return f"http://{_address(host, port)}"


def _check_bus(bus: Bus, *, in_use: str) -> None:
    """Fail now, before anything starts, if a service could not start on `bus`: `in_use`
    says what to do when the local event log is another process's."""
    if isinstance(bus, LocalBus):
        try:
            bus.check_free()
        except BusError as exc:
            fail(f"{exc}: {in_use}")
    try:
        asyncio.run(check_bus(bus))
    except BusError as exc:
        fail(f"KAFKA_BOOTSTRAP_SERVERS: {exc}" if not isinstance(bus, LocalBus) else str(exc))
