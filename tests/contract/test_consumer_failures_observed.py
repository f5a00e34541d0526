"""A consumer that cannot apply its events is seen doing so: its lag stays exported and
grows while its database is down, and its failure logs name the lead, event and trace.

Runs over LocalBus and Kafka, on SQLite and PostgreSQL (Kafka and PostgreSQL are real). The
database that is down is a PostgreSQL server nothing listens for (an embedded SQLite file
does not go down).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shared import consumer_lag
from shared import runtime as runtime_module
from shared.bus.port import Bus, OutgoingMessage
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events.catalog import EventCatalog
from shared.events.codec import build_envelope, to_binary
from shared.handler_context import HandlerContext
from shared.runtime import ServiceDefinition, ServiceRuntime
from shared.settings.loading import load_settings
from tests import support
from tests.conftest import database_with, unique
from tests.support import Ping, catalog_with_ping, count_effects, eventually, ping, ping_consumer

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with database_with(support.metadata, request.param, request, tmp_path) as db:
        yield db


@pytest.fixture
async def database_down() -> AsyncIterator[Database]:
    """A consumer's database that does not answer: nothing listens on port 1."""
    db = Database("postgresql+asyncpg://handoff:secret@127.0.0.1:1/leads")
    yield db
    await db.dispose()


def supervisor(tmp_path: Path, bus: Bus) -> ServiceRuntime:
    """A service runtime over `bus` (not its own): what restarts a failed consumer."""
    definition = ServiceDefinition(
        name="observed",
        metadata=support.metadata,
        outbox_tables=support.outbox_tables,
        inbox_table=support.inbox_table,
        migrations=tmp_path,
    )
    settings = load_settings("intake", data_dir=tmp_path, env="dev")
    return ServiceRuntime(definition=definition, settings=settings, bus=bus, owns_bus=False)


def lag_of(group: str) -> float | None:
    """The consumer lag a group's members export, over all partitions (None: none)."""
    lags = [
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "handoff_consumer_lag"
        for sample in metric.samples
        if sample.labels["group"] == group
    ]
    return sum(lags) if lags else None


def lag_is(group: str, value: float) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return lag_of(group) == value

    return reached


def traced_ping(catalog: EventCatalog, topic: str, lead: uuid.UUID) -> tuple[OutgoingMessage, str]:
    """A ping sent in the caller's trace, and its event id."""
    envelope = build_envelope(
        catalog,
        Ping(lead_id=lead, n=0),
        source_service="test",
        subject=str(lead),
        sequence=1,
        traceparent=CALLER,
    )
    key, headers, value = to_binary(envelope)
    return OutgoingMessage(topic=topic, key=key, value=value, headers=headers), str(envelope.id)


async def consume_until(consumer: EventConsumer, done: Callable[[], Awaitable[bool]]) -> None:
    running = asyncio.create_task(consumer.run())
    try:
        await eventually(done, timeout=60)
    finally:
        consumer.stop()
        await asyncio.wait_for(running, timeout=30)


async def test_the_lag_stays_exported_and_grows_while_the_database_is_down(
    bus: Bus, database_down: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restarts: list[float] = []
    monkeypatch.setattr(
        runtime_module, "restart_delay", lambda _delay, ran_for: restarts.append(ran_for) or 0.3
    )
    monkeypatch.setattr(consumer_lag, "LAG_REPORT_INTERVAL_S", 0.2)
    topic, group, lead = unique("t.outage"), unique("g"), uuid.uuid4()
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    await bus.publish([ping(catalog, topic, lead, n) for n in range(20)])
    runtime = supervisor(tmp_path, bus)
    consumer = ping_consumer(bus, database_down, catalog, group=group, max_attempts=2)
    runtime.consumers.append(consumer)

    supervising = asyncio.create_task(runtime._supervise(consumer))

    with capture_logs():  # (each failure's traceback, rendered, would slow the runs down)
        try:
            await eventually(lag_is(group, 20))
            await bus.publish([ping(catalog, topic, lead, n) for n in range(20, 30)])
            await eventually(lag_is(group, 30))
            restarted, seen = len(restarts), []
            while len(restarts) < restarted + 2 and len(seen) < 1200:  # two restarts more
                seen.append(lag_of(group))
                await asyncio.sleep(0.05)
        finally:
            await runtime.stop()
            await asyncio.wait_for(supervising, timeout=30)
            await runtime.db.dispose()

    assert len(restarts) >= restarted + 2
    assert set(seen) == {30}  # between the runs too
    assert lag_of(group) is None  # stopped: the lag is the group's other members' to export


async def test_a_failing_handlers_log_lines_name_its_lead_event_and_trace(
    bus: Bus, database: Database
) -> None:
    topic, group, lead = unique("t.fail"), unique("g"), uuid.uuid4()
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    message, event_id = traced_ping(catalog, topic, lead)
    await bus.publish([message])

    async def refuse(ctx: HandlerContext, payload: Ping) -> None:
        raise ValueError("not this one")

    async def dead_lettered() -> bool:
        return any(e["event"] == "event dead-lettered" for e in logs)

    consumer = ping_consumer(bus, database, catalog, group=group, handlers=[refuse], max_attempts=2)
    with capture_logs() as logs:
        await consume_until(consumer, dead_lettered)

    failures = [
        e
        for e in logs
        if e["event"] in ("handler failed", "event dead-lettered") and e["group"] == group
    ]
    assert [e["event"] for e in failures] == [
        "handler failed",
        "handler failed",
        "event dead-lettered",
    ]
    assert {(e["lead_id"], e["event_id"], e["trace_id"]) for e in failures} == {
        (str(lead), event_id, CALLER_TRACE_ID)
    }


async def test_a_failed_batch_says_why_even_when_its_events_then_apply_one_by_one(
    bus: Bus, database: Database
) -> None:
    topic, group, lead = unique("t.hiccup"), unique("g"), uuid.uuid4()
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    await bus.publish([ping(catalog, topic, lead, n) for n in range(3)])
    calls = 0

    async def fail_first(ctx: HandlerContext, payload: Ping) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("the first call hiccups")

    async def all_applied() -> bool:
        return await count_effects(database, lead_id=str(lead)) == 3

    consumer = ping_consumer(bus, database, catalog, group=group, handlers=[fail_first])
    with capture_logs() as logs:
        await consume_until(consumer, all_applied)

    ours = [e for e in logs if e.get("group") == group]
    (batch,) = [e for e in ours if e["event"] == "batch failed; retrying its events one by one"]
    assert batch["error"] == "ConnectionResetError('the first call hiccups')"
    assert batch["exc_info"] is True
    assert [e for e in ours if e["event"] == "handler failed"] == []
