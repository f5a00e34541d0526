"""A consumer SIGKILLed between its database commit and its offset commit loses nothing
and applies nothing twice: the event comes again and the inbox drops it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

import pytest

from shared.bus.kafka import KafkaBus
from shared.bus.local import LocalBus
from shared.bus.port import Bus
from shared.db import Database
from tests.conftest import new_pg_database, unique
from tests.infra import ROOT
from tests.support import catalog_with_ping, count_effects, ping


async def start_consumer(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.consumer_process",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def wait_for_line(
    proc: asyncio.subprocess.Process, event: str, timeout: float = 90
) -> dict[str, object]:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while line := await proc.stdout.readline():
            message = json.loads(line)  # stdout carries only the process's report lines
            if message.get("event") == event:
                return dict(message)
    raise AssertionError(f"consumer exited (code {proc.returncode}) before {event!r}")


async def publish_pings(bus: Bus, topic: str, lead: uuid.UUID, count: int) -> None:
    catalog = catalog_with_ping(topic)
    messages = [ping(catalog, topic, lead, n) for n in range(count)]
    await bus.ensure_topics([topic])
    await bus.publish(messages)


async def crash_then_recover(bus_spec: str, url: str, topic: str) -> list[dict[str, object]]:
    group = unique("g")
    crashing = await start_consumer(bus_spec, url, topic, group, "--crash")
    await wait_for_line(crashing, "db_committed")
    assert await crashing.wait() == -signal.SIGKILL

    survivor = await start_consumer(bus_spec, url, topic, group)
    duplicates = [await wait_for_line(survivor, "duplicate") for _ in range(3)]
    survivor.send_signal(signal.SIGTERM)
    await wait_for_line(survivor, "stopped", timeout=60)
    assert await survivor.wait() == 0
    return duplicates


async def test_kafka_consumer_killed_after_db_commit_gets_the_events_again_and_skips_them(
    kafka_servers: str, postgres_admin_url: str
) -> None:
    topic, lead = unique("t.kill"), uuid.uuid4()
    bus = KafkaBus(kafka_servers, client_id="test-publisher", partitions=4)
    await bus.start()
    await publish_pings(bus, topic, lead, 3)
    await bus.close()
    async with new_pg_database(postgres_admin_url) as url:
        duplicates = await crash_then_recover(f"kafka:{kafka_servers}", url, topic)
        db = Database(url)
        assert await count_effects(db, lead_id=str(lead)) == 3
        await db.dispose()
    assert len({d["id"] for d in duplicates}) == 3


async def test_local_bus_consumer_killed_after_db_commit_gets_the_events_again_and_skips_them(
    tmp_path: Path,
) -> None:
    topic, lead = unique("t.kill"), uuid.uuid4()
    log_path = tmp_path / "events.db"
    bus = LocalBus(log_path, partitions=4)
    await bus.start()
    await publish_pings(bus, topic, lead, 3)
    await bus.close()
    url = f"sqlite+aiosqlite:///{tmp_path / 'consumer.db'}"
    duplicates = await crash_then_recover(f"local:{log_path}", url, topic)
    db = Database(url)
    assert await count_effects(db, lead_id=str(lead)) == 3
    await db.dispose()
    assert len({d["id"] for d in duplicates}) == 3


pytestmark = pytest.mark.timeout(240)
