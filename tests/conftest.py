"""Fixtures shared by every test layer: real infrastructure, fresh databases, buses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from shared.bus.kafka import KafkaBus
from shared.bus.local import LocalBus
from shared.bus.port import Bus
from shared.db import Database
from tests import infra


def unique(prefix: str) -> str:
    """A random name, so tests never share topics, groups or databases."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def kafka_servers() -> Iterator[str]:
    try:
        servers = infra.kafka_bootstrap_servers()
    except infra.InfrastructureMissing as exc:
        infra.unavailable("Kafka broker", str(exc))
        raise
    cluster = KafkaBus(servers, client_id="handoff-tests")
    before = _on_own_loop(cluster.list_topics())
    yield servers
    # The broker outlives the run (deploy/local keeps its data): the topics this run made
    # (unique names, see `unique`) go, or every run would leave a few dozen partitions.
    made = [t for t in _on_own_loop(cluster.list_topics()) - before if _UNIQUE.search(t)]
    with contextlib.suppress(Exception):
        _on_own_loop(cluster.delete_topics(made))


_UNIQUE = re.compile(r"-[0-9a-f]{10}$")
T = TypeVar("T")


def _on_own_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end on a loop of its own (a fixture may be set up while a test's
    loop runs: `request.getfixturevalue` from an async fixture)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        return infra.postgres_url()
    except infra.InfrastructureMissing as exc:
        infra.unavailable("PostgreSQL server", str(exc))
        raise


@pytest.fixture
async def postgres_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A brand-new PostgreSQL database for this test, dropped afterwards."""
    async with _pg_database(postgres_admin_url) as url:
        yield url


async def admin_execute(admin_url: str, *statements: str) -> None:
    """Run `statements` in turn on the server's admin database (one connection)."""
    admin = make_url(admin_url)
    conn = await asyncpg.connect(
        user=admin.username,
        password=admin.password,
        host=admin.host,
        port=admin.port,
        database=admin.database,
    )
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


class _pg_database:  # noqa: N801 - used like a function
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = "t_" + uuid.uuid4().hex[:16]

    async def __aenter__(self) -> str:
        await admin_execute(self.admin_url, f'CREATE DATABASE "{self.name}"')
        url = make_url(self.admin_url).set(database=self.name)
        return url.render_as_string(hide_password=False)

    async def __aexit__(self, *exc: object) -> None:
        await admin_execute(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def new_pg_database(admin_url: str) -> _pg_database:
    return _pg_database(admin_url)


@contextlib.asynccontextmanager
async def database_with(
    metadata: MetaData, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Database]:
    """A fresh database of `kind` ("sqlite" or "postgres") with `metadata`'s tables."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'tables.db'}"
        else:
            admin = request.getfixturevalue("postgres_admin_url")
            url = await stack.enter_async_context(new_pg_database(admin))
        database = Database(url)
        stack.push_async_callback(database.dispose)
        async with database.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.integration)])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bus]:
    """The bus contract suite runs once per adapter."""
    instance: Bus
    if request.param == "local":
        instance = LocalBus(tmp_path / "events.db", partitions=4)
    else:
        servers = request.getfixturevalue("kafka_servers")
        instance = KafkaBus(
            servers, client_id=unique("test"), partitions=4, session_timeout_ms=6000
        )
    await instance.start()
    yield instance
    await instance.close()


REAL_INFRASTRUCTURE = {"kafka_servers", "postgres_admin_url", "postgres_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_INFRASTRUCTURE & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


_integration: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "integration" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _integration[report.outcome] = _integration.get(report.outcome, 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran = _integration["passed"] + _integration["failed"]
    terminalreporter.write_line(
        f"integration tests against real Kafka/PostgreSQL: {ran} ran "
        f"({_integration['passed']} passed, {_integration['failed']} failed, "
        f"{_integration['skipped']} skipped)"
    )
    for line in _ci_failures:
        terminalreporter.write_line(line, red=True, bold=True)


_ci_failures: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI an integration test that did not run is a failure, whatever skipped it."""
    if os.environ.get("CI") != "true" or not session.items:
        return
    ran = _integration["passed"] + _integration["failed"]
    wanted = sum(1 for item in session.items if "integration" in item.keywords)
    if wanted and (_integration["skipped"] or ran == 0):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        _ci_failures.append(
            f"CI: {_integration['skipped']} integration test(s) skipped and {ran} ran: "
            "every integration test must run against real Kafka and PostgreSQL"
        )
