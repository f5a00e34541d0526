"""The lookups of a capture and of a webhook batch use an index, whatever the table size.

(A lookup by external id alone once scanned every external id for each batch: the key is
(provider, external_id).) The statements are driver SQL (`services.intake.driver_sql`),
checked here as each database plans them.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.intake import leads, webhook_intake
from services.intake.driver_sql import Query
from services.intake.models import metadata
from shared.pg_lists import packed

# each lookup with its scalar parameters and its lists
LOOKUPS: list[tuple[Query, list[str], list[list[str]]]] = [
    (leads.IDS_BY_EXTERNAL_ID, ["hubspot"], [["1", "2"]]),
    (leads._EXTERNAL_IDS_OF_LEADS, [], [["l1", "l2"]]),
    (leads._LEADS_BY_EMAIL, [], [["a@x.com", "b@x.com"]]),
    (leads._LEADS_BY_ID, [], [["i1", "i2"]]),
    (leads._LEADS_BY_EMAIL_OR_ID, [], [["a@x.com", "b@x.com"], ["i1", "i2"]]),
    (leads._ACCOUNTS_BY_DOMAIN, [], [["x.com", "y.com"]]),
    (webhook_intake._SEEN, ["hs"], [["hubspot:1:1", "hubspot:1:2"]]),
    (
        leads._LEADS_WITH_EXTERNAL_IDS_AND_ACCOUNTS,
        [],
        [["a@x.com", "b@x.com"], ["hubspot", "marketo"], ["1", "2"], ["x.com", "y.com"]],
    ),
]


@pytest.mark.parametrize(("query", "params", "lists"), [q for q in LOOKUPS if q[0].sqlite])
def test_a_capture_lookup_searches_an_index_on_sqlite(
    query: Query, params: list[str], lists: list[list[str]]
) -> None:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    sql = query.text("sqlite", [len(values) for values in lists])
    flat = [*params, *(v for values in lists for v in values)]
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(flat)).all()
        steps = [row[3] for row in plan]
    assert steps and not [s for s in steps if s.startswith("SCAN")], steps


@pytest.mark.integration
@pytest.mark.parametrize(
    ("query", "params", "lists"),
    # (the SQLite-only variants: PostgreSQL's one lookup of leads takes every list)
    [lookup for lookup in LOOKUPS if lookup[0].postgres],
)
@pytest.mark.parametrize("as_sent", [False, True], ids=["arrays", "packed"])
async def test_a_capture_lookup_searches_an_index_on_postgres(
    query: Query, params: list[str], lists: list[list[str]], postgres_url: str, as_sent: bool
) -> None:
    sql, args = _statement(query, [*params, *lists], as_sent)
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            # on empty tables a scan is cheapest: ask whether an index *can* answer
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            explained = await conn.exec_driver_sql("EXPLAIN " + sql, tuple(args))
            plan = "\n".join(row[0] for row in explained)
    finally:
        await engine.dispose()
    assert "Index" in plan and "Seq Scan" not in plan, plan


def test_sqlite_lists_get_one_placeholder_per_value() -> None:
    sql = leads._LEADS_BY_EMAIL_OR_ID.text("sqlite", [2, 3])
    assert "email IN (?, ?)" in sql and "id IN (?, ?, ?)" in sql


def _statement(query: Query, args: list[Any], as_sent: bool) -> tuple[str, list[Any]]:
    """The PostgreSQL statement and its arguments as written (arrays), or as `PgDriver`
    sends them (text lists packed: `shared.pg_lists`)."""
    sql = query.text("postgresql", [])
    if not as_sent:
        return sql, args
    statement, values = packed(sql, args)
    assert statement != sql  # (every lookup has text lists)
    return statement, list(values)


def _literal(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::varchar[]"
    return "'" + value.replace("'", "''") + "'"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("query", "params", "lists"), [lookup for lookup in LOOKUPS if lookup[0].postgres]
)
@pytest.mark.parametrize("as_sent", [False, True], ids=["arrays", "packed"])
async def test_a_capture_lookup_plan_made_on_empty_tables_still_uses_an_index(
    query: Query, params: list[str], lists: list[list[str]], postgres_url: str, as_sent: bool
) -> None:
    """PostgreSQL keeps a prepared statement's generic plan (after five executions) while
    the tables grow. Made on a fresh database, a plan that scans would read every lead,
    or every delivery of a source, for each batch until autovacuum analyzes the table."""
    sql, values = _statement(query, [*params, *lists], as_sent)
    engine = create_async_engine(postgres_url)
    args = ", ".join(_literal(v) for v in values)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.exec_driver_sql("PREPARE lookup AS " + sql)
            explained = await conn.exec_driver_sql(f"EXPLAIN EXECUTE lookup({args})")
            plan = "\n".join(row[0] for row in explained)
    finally:
        await engine.dispose()
    # every value is looked up in an index, none is a filter over what a scan returns
    assert "Index" in plan and "Seq Scan" not in plan and "Filter" not in plan, plan


@pytest.mark.integration
@pytest.mark.parametrize("as_sent", [False, True], ids=["arrays", "packed"])
async def test_the_leads_are_locked_in_id_order(postgres_url: str, as_sent: bool) -> None:
    """Two batches lock their leads in one order (no deadlock): the plan sorts the ids,
    then fetches and locks each lead in that order (a nested loop, locking inside)."""
    lists: list[Any] = [["a@x.com", "b@x.com"], ["hubspot", "marketo"], ["1", "2"], ["x.com"]]
    sql, values = _statement(leads._LEADS_WITH_EXTERNAL_IDS_AND_ACCOUNTS, lists, as_sent)
    engine = create_async_engine(postgres_url)
    args = ", ".join(_literal(v) for v in values)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.exec_driver_sql("PREPARE lookup AS " + sql)
            explained = await conn.exec_driver_sql(f"EXPLAIN EXECUTE lookup({args})")
            plan = [row[0] for row in explained]
    finally:
        await engine.dispose()

    def first(text: str) -> int:
        return next(n for n, line in enumerate(plan) if text in line)

    loop, lock = first("Nested Loop"), first("LockRows")
    sorted_ids = first("Sort Key: leads.id")
    indent = len(plan[loop]) - len(plan[loop].lstrip())
    # the sorted ids are the loop's outer side, the locking its inner side
    assert loop < sorted_ids < lock, plan
    assert all(len(line) - len(line.lstrip()) > indent for line in plan[loop + 1 : lock]), plan
