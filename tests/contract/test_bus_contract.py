"""The bus contract: every adapter (LocalBus, KafkaBus) must behave the same way."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.bus.port import Bus, OutgoingMessage, Record
from shared.consumer import ConsumerHooks, EventConsumer
from shared.db import Database
from shared.events.catalog import EventCatalog, dead_letter_topic
from shared.handler_context import Handler, HandlerContext
from tests.conftest import unique
from tests.support import (
    Ping,
    catalog_with_ping,
    collect,
    count_effects,
    create_schema,
    effect_ns,
    eventually,
    ping,
    ping_consumer,
)


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'consumer.db'}")
    await create_schema(database)
    return database


def consumer(
    bus: Bus, db: Database, catalog: EventCatalog, group: str, hooks: ConsumerHooks | None = None
) -> EventConsumer:
    return ping_consumer(
        bus, db, catalog, group=group, service="test", hooks=hooks, batch_size=50, max_attempts=2
    )


async def test_events_of_one_key_arrive_in_publish_order(bus: Bus) -> None:
    topic, catalog = unique("t.order"), None
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    leads = [uuid.uuid4() for _ in range(8)]
    messages = [ping(catalog, topic, leads[i % 8], i) for i in range(240)]
    for start in range(0, 240, 40):  # several publishes, interleaved keys
        await bus.publish(messages[start : start + 40])

    subscription = bus.subscribe(group=unique("g"), topics=[topic])
    await subscription.start()
    records = await collect(subscription, 240)
    await subscription.close()

    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        seen[record.key or ""].append(int(record.header("ce_sequence") or 0))
    assert len(records) == 240
    assert all(seq == sorted(seq) and len(seq) == 30 for seq in seen.values())


async def test_event_whose_handler_crashed_before_commit_is_delivered_again(
    bus: Bus, db: Database
) -> None:
    topic = unique("t.crash")
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    lead = uuid.uuid4()
    await bus.publish([ping(catalog, topic, lead, 1)])
    group = unique("g")

    class Crash(BaseException):
        pass

    async def crash_before_offset_commit(records: object) -> None:
        raise Crash  # the process "dies" after the DB commit, before the offset commit

    crashing = consumer(
        bus, db, catalog, group, ConsumerHooks(after_db_commit=crash_before_offset_commit)
    )
    with pytest.raises(Crash):
        await asyncio.wait_for(crashing.run(), timeout=60)
    assert await count_effects(db, lead_id=str(lead)) == 1

    duplicates: list[str] = []

    async def on_duplicate(envelope: object) -> None:
        duplicates.append(str(getattr(envelope, "id", "")))

    survivor = consumer(bus, db, catalog, group, ConsumerHooks(on_duplicate=on_duplicate))
    task = asyncio.create_task(survivor.run())

    async def redelivered() -> bool:
        return len(duplicates) == 1

    await eventually(redelivered, timeout=60)
    survivor.stop()
    await asyncio.wait_for(task, timeout=30)
    assert await count_effects(db, lead_id=str(lead)) == 1


async def test_two_members_of_one_group_share_the_partitions(bus: Bus) -> None:
    topic = unique("t.share")
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    group = unique("g")
    first = bus.subscribe(group=group, topics=[topic])
    second = bus.subscribe(group=group, topics=[topic])
    await first.start()
    await second.start()

    async def both_assigned() -> bool:
        await first.poll(max_records=1, timeout=0.2)  # Kafka rebalances inside poll
        await second.poll(max_records=1, timeout=0.2)
        return bool(first.assignment()) and bool(second.assignment())

    await eventually(both_assigned, timeout=60, interval=0)
    messages = [ping(catalog, topic, uuid.uuid4(), i) for i in range(200)]
    await bus.publish(messages)
    got_first: list[Record] = []
    got_second: list[Record] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(got_first) + len(got_second) < 200 and asyncio.get_running_loop().time() < deadline:
        got_first += await first.poll(max_records=500, timeout=0.2)
        got_second += await second.poll(max_records=500, timeout=0.2)
    await first.close()
    await second.close()

    assert first.assignment().isdisjoint(second.assignment())
    assert got_first
    assert got_second
    first_ids = {r.header("ce_id") for r in got_first}
    second_ids = {r.header("ce_id") for r in got_second}
    assert first_ids.isdisjoint(second_ids)
    assert len(first_ids | second_ids) == 200


async def test_two_groups_each_see_every_event(bus: Bus) -> None:
    topic = unique("t.groups")
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    await bus.publish([ping(catalog, topic, uuid.uuid4(), i) for i in range(50)])
    a = bus.subscribe(group=unique("ga"), topics=[topic])
    b = bus.subscribe(group=unique("gb"), topics=[topic])
    await a.start()
    await b.start()

    got_a = await collect(a, 50)
    got_b = await collect(b, 50)
    await a.close()
    await b.close()

    assert len(got_a) == len(got_b) == 50
    assert {r.header("ce_id") for r in got_a} == {r.header("ce_id") for r in got_b}


async def dead_letters(bus: Bus, group: str, count: int) -> list[Record]:
    """What landed on a group's dead-letter topic."""
    inspector = bus.subscribe(group=unique("inspect"), topics=[dead_letter_topic(group)])
    await inspector.start()
    dead = await collect(inspector, count)
    await inspector.close()
    return dead


async def test_malformed_and_unknown_events_go_to_the_dead_letter_topic_and_consumption_goes_on(
    bus: Bus, db: Database
) -> None:
    topic = unique("t.dlq")
    catalog = catalog_with_ping(topic)
    group = unique("g")
    await bus.ensure_topics([topic])  # the consumer creates its dead-letter topic
    lead = uuid.uuid4()
    not_json = OutgoingMessage(
        topic=topic,
        key=str(lead),
        value=b"{not json",
        headers=ping(catalog, topic, lead, 0).headers,
    )
    unknown = ping(catalog, topic, lead, 1)
    unknown = OutgoingMessage(
        topic=topic,
        key=unknown.key,
        value=unknown.value,
        headers=[
            (k, b"handoff.nobody.knows.v9" if k == "ce_type" else v) for k, v in unknown.headers
        ],
    )
    garbled = ping(catalog, topic, lead, 3)
    garbled = OutgoingMessage(
        topic=topic,
        key=garbled.key,
        value=garbled.value,
        headers=[*garbled.headers, ("content-type", b"\xff\xfe\x00")],
    )
    await bus.publish([not_json, unknown, garbled, ping(catalog, topic, lead, 2)])

    worker = consumer(bus, db, catalog, group)
    task = asyncio.create_task(worker.run())

    async def good_one_applied() -> bool:
        return await count_effects(db, lead_id=str(lead), n=2) == 1

    await eventually(good_one_applied, timeout=60)
    worker.stop()
    await asyncio.wait_for(task, timeout=30)

    dead = await dead_letters(bus, group, 3)
    errors = sorted(r.header("dlq_error") or "" for r in dead)
    assert len(dead) == 3
    assert errors[0].startswith("MalformedEvent")
    assert "not JSON" in errors[0]
    assert errors[1].startswith("MalformedEvent")  # bytes that are not even text
    assert errors[2].startswith("UnknownEventType")
    assert "handoff.nobody.knows.v9" in errors[2]
    assert all(r.header("dlq_topic") == topic for r in dead)


async def dead_letter_of_seven(bus: Bus, db: Database, handler: Handler) -> Record:
    """Pings 5-9 of one lead through a consumer whose `handler` fails on ping 7: waits for
    the four others to be applied and returns ping 7's dead letter."""
    topic = unique("t.poison")
    catalog = catalog_with_ping(topic)
    group = unique("g")
    await bus.ensure_topics([topic])  # the consumer creates its dead-letter topic
    lead = uuid.uuid4()
    worker = ping_consumer(
        bus, db, catalog, group=group, service="test", handlers=[handler], max_attempts=2
    )
    await bus.publish([ping(catalog, topic, lead, n) for n in range(5, 10)])
    task = asyncio.create_task(worker.run())

    async def others_applied() -> bool:
        return await count_effects(db, lead_id=str(lead)) == 4

    await eventually(others_applied, timeout=60)
    worker.stop()
    await asyncio.wait_for(task, timeout=30)
    assert await count_effects(db, lead_id=str(lead), n=7) == 0
    (dead,) = await dead_letters(bus, group, 1)
    return dead


async def test_a_handler_that_keeps_failing_dead_letters_only_its_event(
    bus: Bus, db: Database
) -> None:
    async def refuse_seven(ctx: object, payload: Ping) -> None:
        if payload.n == 7:
            raise ValueError("seven is not a valid ping")

    dead = await dead_letter_of_seven(bus, db, refuse_seven)

    assert dead.header("dlq_error") == "ValueError: seven is not a valid ping"


async def test_an_event_whose_own_statement_fails_is_dead_lettered_not_retried_for_ever(
    bus: Bus, db: Database
) -> None:
    """A statement the event's data makes fail (here malformed JSON) is the event's fault,
    though the database raised it: dead-lettered, and the events behind it applied."""

    async def bad_json_on_seven(ctx: HandlerContext, payload: Ping) -> None:
        if payload.n == 7:
            await ctx.session.execute(text("SELECT json_extract('{not json', '$.x')"))

    dead = await dead_letter_of_seven(bus, db, bad_json_on_seven)

    assert "malformed JSON" in (dead.header("dlq_error") or "")


async def test_a_member_joining_mid_stream_changes_nothing_about_exactly_once_effects(
    bus: Bus, db: Database
) -> None:
    topic = unique("t.join")
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    group = unique("g")
    published = 100
    await bus.publish([ping(catalog, topic, uuid.uuid4(), n) for n in range(published)])
    applied_by: dict[str, int] = defaultdict(int)

    def member(name: str) -> EventConsumer:
        async def count(records: Sequence[Record]) -> None:
            applied_by[name] += len(records)

        async def slowly(ctx: object, payload: Ping) -> None:
            await asyncio.sleep(0.01)  # keep the stream going while the group rebalances

        return ping_consumer(
            bus,
            db,
            catalog,
            group=group,
            service="test",
            handlers=[slowly],
            batch_size=20,
            hooks=ConsumerHooks(after_db_commit=count),
        )

    first, second = member("first"), member("second")
    tasks = [asyncio.create_task(first.run())]

    async def some_applied() -> bool:
        return await count_effects(db) > 0

    await eventually(some_applied, timeout=60, interval=0.01)
    tasks.append(asyncio.create_task(second.run()))
    # The stream goes on until the newcomer has its share: however long the rebalance takes
    # on a busy machine, it happens while events are still flowing.
    deadline = asyncio.get_running_loop().time() + 90
    while not applied_by["second"] and asyncio.get_running_loop().time() < deadline:
        await bus.publish(
            [ping(catalog, topic, uuid.uuid4(), n) for n in range(published, published + 10)]
        )
        published += 10
        await asyncio.sleep(0.1)

    async def all_applied() -> bool:
        return await count_effects(db) >= published

    await eventually(all_applied, timeout=90)
    first.stop()
    second.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    assert sorted(await effect_ns(db)) == list(range(published))  # each applied exactly once
    assert applied_by["first"] > 0
    assert applied_by["second"] > 0


async def test_a_commit_marks_exactly_its_records_consumed(bus: Bus) -> None:
    """The next member of the group starts right after the last committed record of each
    partition: nothing committed comes again, nothing after it is skipped."""
    topic = unique("t.commit")
    catalog = catalog_with_ping(topic)
    await bus.ensure_topics([topic])
    leads = [uuid.uuid4() for _ in range(2)]
    await bus.publish([ping(catalog, topic, lead, n) for n in range(4) for lead in leads])
    group = unique("g")

    first = bus.subscribe(group=group, topics=[topic])
    await first.start()
    records: list[Record] = []
    async with asyncio.timeout(60):
        while len(records) < 8:
            records += await first.poll(max_records=100, timeout=0.5)
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r)
    committed: list[Record] = []  # the first three of one partition, the first of any other
    expected: list[Record] = []
    for i, partition in enumerate(sorted(by_partition)):
        ordered = sorted(by_partition[partition], key=lambda r: r.offset)
        head = 3 if i == 0 else 1
        committed += ordered[:head]
        expected += ordered[head:]
    await first.commit(committed[::-1])  # (the order of the records does not matter)
    await first.close()

    second = bus.subscribe(group=group, topics=[topic])
    await second.start()
    again: list[Record] = []
    async with asyncio.timeout(60):
        while len(again) < len(expected):
            again += await second.poll(max_records=100, timeout=0.5)
    again += await second.poll(max_records=100, timeout=1.0)  # and nothing more
    await second.close()
    assert sorted((r.partition, r.offset) for r in again) == sorted(
        (r.partition, r.offset) for r in expected
    )


class _Deadlock(Exception):
    sqlstate = "40P01"  # as PostgreSQL's driver says it


async def test_an_event_whose_transactions_deadlock_is_applied_later_not_dead_lettered(
    bus: Bus, db: Database
) -> None:
    topic = unique("t.deadlock")
    catalog = catalog_with_ping(topic)
    group = unique("g")
    await bus.ensure_topics([topic])
    lead = uuid.uuid4()
    deadlocks = 4  # the batch, then each of its one-by-one attempts

    async def deadlocked(ctx: object, payload: Ping) -> None:
        nonlocal deadlocks
        if deadlocks:
            deadlocks -= 1
            raise DBAPIError("INSERT", {}, _Deadlock("deadlock detected"))

    worker = ping_consumer(
        bus, db, catalog, group=group, service="test", handlers=[deadlocked], max_attempts=3
    )
    await bus.publish([ping(catalog, topic, lead, 1)])
    with pytest.raises(DBAPIError):  # the run fails; its supervisor runs it again
        await asyncio.wait_for(worker.run(), timeout=60)
    again = ping_consumer(bus, db, catalog, group=group, service="test", handlers=[deadlocked])
    task = asyncio.create_task(again.run())
    try:
        for _ in range(600):
            if await count_effects(db, lead_id=str(lead)) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        again.stop()
        await asyncio.wait_for(task, timeout=30)

    assert await count_effects(db, lead_id=str(lead)) == 1
    inspector = bus.subscribe(group=unique("inspect"), topics=[dead_letter_topic(group)])
    await inspector.start()
    assert await inspector.poll(max_records=10, timeout=1) == []
    await inspector.close()
