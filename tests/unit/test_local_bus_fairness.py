"""LocalBus polls share `max_records` among every assigned partition with records, as Kafka's
fetcher does: a backlog on one partition (or topic) does not hold the others up."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus.local import LocalBus, _shares, partition_for
from shared.bus.port import OutgoingMessage, Record

PARTITIONS = 6


def key_on(partition: int) -> str:
    """A key that lands in `partition`."""
    return next(
        key
        for key in (f"k{i}" for i in range(10_000))
        if partition_for(key, PARTITIONS) == partition
    )


def messages(topic: str, partition: int, count: int) -> list[OutgoingMessage]:
    key = key_on(partition)
    return [OutgoingMessage(topic, key, str(n).encode()) for n in range(count)]


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[LocalBus]:
    instance = LocalBus(tmp_path / "events.db", partitions=PARTITIONS)
    await instance.start()
    yield instance
    await instance.close()


def assert_in_order_once(records: list[Record]) -> None:
    """Each partition's records in offset order from 0, none missing or repeated."""
    offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in records:
        offsets[(r.topic, r.partition)].append(r.offset)
    for seen in offsets.values():
        assert seen == list(range(len(seen)))


async def test_a_record_behind_another_partitions_backlog_comes_in_the_first_poll(
    bus: LocalBus,
) -> None:
    await bus.publish(messages("t", 0, 5000))
    await bus.publish(messages("t", 5, 1))
    subscription = bus.subscribe(group="g", topics=["t"])
    await subscription.start()

    first = await subscription.poll(max_records=1000, timeout=1)

    assert len(first) == 1000
    assert [r.offset for r in first if r.partition == 5] == [0]
    rest: list[Record] = []
    while len(first) + len(rest) < 5001:
        batch = await subscription.poll(max_records=1000, timeout=1)
        assert batch
        rest += batch
    assert_in_order_once(first + rest)
    assert await subscription.poll(max_records=1000, timeout=0.1) == []
    await subscription.close()


async def test_a_backlog_on_one_topic_does_not_hold_up_another(bus: LocalBus) -> None:
    await bus.publish(messages("activity.recorded", 0, 3000))
    await bus.publish(messages("lead.captured", 3, 1))
    subscription = bus.subscribe(group="g", topics=["activity.recorded", "lead.captured"])
    await subscription.start()

    first = await subscription.poll(max_records=500, timeout=1)

    assert len(first) == 500
    assert [r.topic for r in first].count("lead.captured") == 1
    await subscription.close()


async def test_partitions_with_backlogs_share_each_poll_evenly_and_in_order(
    bus: LocalBus,
) -> None:
    for partition, count in ((0, 900), (2, 50), (4, 900)):
        await bus.publish(messages("t", partition, count))
    subscription = bus.subscribe(group="g", topics=["t"])
    await subscription.start()

    first = await subscription.poll(max_records=300, timeout=1)

    per_partition = {p: sum(r.partition == p for r in first) for p in (0, 2, 4)}
    assert per_partition == {0: 125, 2: 50, 4: 125}  # what partition 2 leaves goes round
    records = list(first)
    while len(records) < 1850:
        batch = await subscription.poll(max_records=300, timeout=1)
        assert batch
        records += batch
    assert_in_order_once(records)
    assert len(records) == 1850
    await subscription.close()


async def test_when_fewer_records_are_asked_than_partitions_have_each_is_served_in_turn(
    bus: LocalBus,
) -> None:
    for partition in range(PARTITIONS):
        await bus.publish(messages("t", partition, 10))
    subscription = bus.subscribe(group="g", topics=["t"])
    await subscription.start()

    polls = [await subscription.poll(max_records=2, timeout=1) for _ in range(3)]

    assert {r.partition for batch in polls for r in batch} == set(range(PARTITIONS))
    await subscription.close()


async def test_a_commit_after_a_shared_poll_resumes_each_partition_where_it_stopped(
    bus: LocalBus,
) -> None:
    await bus.publish(messages("t", 0, 100))
    await bus.publish(messages("t", 1, 100))
    first = bus.subscribe(group="g", topics=["t"])
    await first.start()
    taken = await first.poll(max_records=50, timeout=1)
    await first.commit(taken)
    await first.close()

    second = bus.subscribe(group="g", topics=["t"])
    await second.start()
    again = await second.poll(max_records=1000, timeout=1)
    await second.close()

    assert sorted((r.partition, r.offset) for r in taken + again) == [
        (p, o) for p in (0, 1) for o in range(100)
    ]


@pytest.mark.parametrize(
    ("available", "budget", "expected"),
    [
        ([5000, 1], 1000, [999, 1]),
        ([10, 10, 10], 100, [10, 10, 10]),
        ([100, 100, 100], 10, [4, 3, 3]),
        ([1, 1, 1], 2, [1, 1, 0]),
        ([7, 0, 9], 0, [0, 0, 0]),
    ],
)
def test_shares_are_even_capped_and_add_up_to_the_budget(
    available: list[int], budget: int, expected: list[int]
) -> None:
    assert _shares(available, budget) == expected


async def test_the_odd_records_of_a_poll_go_to_each_partition_in_turn(bus: LocalBus) -> None:
    for partition in (1, 2, 3):
        await bus.publish(messages("t", partition, 100))
    subscription = bus.subscribe(group="g", topics=["t"])
    await subscription.start()

    counts: dict[int, int] = defaultdict(int)
    for _ in range(3):
        for r in await subscription.poll(max_records=10, timeout=1):
            counts[r.partition] += 1

    assert counts == {1: 10, 2: 10, 3: 10}
    await subscription.close()
