"""On PostgreSQL: a database belongs to the first service migrated into it, even when two
services start on the same empty database at once; a database that cannot be used is one
line naming DATABASE_URL (without its password) and why."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner, Result

from shared.alembic_commands import alembic_config
from shared.cli import app, serving
from shared.migration_ownership import OWNER_TABLE
from shared.migrations import MIGRATION_LOCK
from shared.service_app import service_definition
from tests.conftest import new_pg_database

pytestmark = pytest.mark.integration


async def invoke(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> Result:
    # `serve` configures logging for the process: under CliRunner that would bind its
    # captured stderr, closed once the command returns, and later tests would log to it
    monkeypatch.setattr(serving, "configure_logging", lambda **_: None)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("HANDOFF_DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


def error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: DATABASE_URL="), result.output
    return line


async def owners(url: str) -> list[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = list((await conn.execute(text(f"SELECT name FROM {OWNER_TABLE}"))).scalars())
    await engine.dispose()
    return names


async def test_another_service_is_refused_naming_both(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with new_pg_database(postgres_admin_url) as url:
        assert (await invoke(monkeypatch, url, "migrate", "routing")).exit_code == 0

        line = error_line(await invoke(monkeypatch, url, "migrate", "metrics"))

        assert "routing's database, not metrics's" in line
        assert str(make_url(url).database) in line
        assert f":{make_url(url).password}@" not in line
        assert await owners(url) == ["routing"]


async def test_two_services_starting_on_one_empty_database_leave_it_to_one(
    postgres_admin_url: str,
) -> None:
    async def migrate(service: str, url: str) -> tuple[int, str]:
        environment = {**os.environ, "DATABASE_URL": url}
        environment.pop("HANDOFF_DATABASE_URL", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.cli",
            "migrate",
            service,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        return await process.wait(), output.decode()

    async def waiting_for_the_lock(holder: asyncpg.Connection) -> int:
        return int(
            await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )

    async with new_pg_database(postgres_admin_url) as url:
        services = ("routing", "metrics", "routing")  # processes, as replicas start
        parsed = make_url(url)
        holder = await asyncpg.connect(
            user=parsed.username,
            password=parsed.password,
            host=parsed.host,
            port=parsed.port,
            database=parsed.database,
        )
        try:  # all of them find the database empty, then migrate one after the other
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            starts = [asyncio.create_task(migrate(name, url)) for name in services]
            for _ in range(300):
                if await waiting_for_the_lock(holder) == len(services):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the migrations did not all wait for the one migration lock")
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            results = await asyncio.gather(*starts)
        finally:
            await holder.close()

        (owner,) = await owners(url)
        for name, (code, output) in zip(services, results, strict=True):
            if name == owner:
                assert code == 0, output
            else:
                assert code == 2, output
                assert f"{owner}'s database, not {name}'s" in output
                assert "Traceback" not in output


async def test_a_database_from_before_owners_is_adopted_by_its_own_service(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with new_pg_database(postgres_admin_url) as url:
        config = alembic_config(service_definition("intake").migrations, url)
        await asyncio.to_thread(command.upgrade, config, "head")  # as before owners

        line = error_line(await invoke(monkeypatch, url, "migrate", "routing"))
        assert "intake's database, not routing's" in line

        assert (await invoke(monkeypatch, url, "migrate", "intake")).exit_code == 0
        assert await owners(url) == ["intake"]


async def test_a_missing_database_is_one_line(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(postgres_admin_url).set(database="no_such_database_here")

    for command_line in (["migrate", "routing"], ["serve", "routing", "--port", "0"]):
        result = await invoke(monkeypatch, url.render_as_string(hide_password=False), *command_line)

        line = error_line(result)
        assert 'database "no_such_database_here" does not exist' in line
        assert f":{url.password}@" not in line


async def test_an_unknown_user_is_one_line(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(postgres_admin_url).set(username="no_such_user", password="s3cret")

    result = await invoke(
        monkeypatch, url.render_as_string(hide_password=False), "migrate", "routing"
    )

    line = error_line(result)
    assert "authentication failed for user 'no_such_user'" in line
    assert "s3cret" not in line
