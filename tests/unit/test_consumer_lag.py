"""The consumer-lag gauge shows only the partitions a member has now."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from shared.consumer import EventConsumer
from shared.inbox import Inbox
from tests.support import Ping, catalog_with_ping, inbox_table


class Moving:
    """A subscription whose assignment the test moves (what a rebalance does)."""

    def __init__(self) -> None:
        self.lags: dict[tuple[str, int], int] = {}

    async def lag(self) -> dict[tuple[str, int], int]:
        return dict(self.lags)


def reported(group: str) -> dict[str, float]:
    return {
        sample.labels["partition"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "handoff_consumer_lag"
        for sample in metric.samples
        if sample.labels["group"] == group
    }


async def report(consumer: EventConsumer, subscription: Any) -> None:
    consumer._last_lag_report = 0.0  # (reports are at most every 5 s)
    await consumer._report_lag(subscription)


async def test_partitions_that_moved_to_another_member_leave_the_gauge() -> None:
    consumer = EventConsumer(
        service="lagging",
        group="g-lag",
        bus=None,  # type: ignore[arg-type]  # only the lag report runs
        db=None,  # type: ignore[arg-type]
        inbox=Inbox(inbox_table),
        catalog=catalog_with_ping("t"),
        handlers={Ping: []},
    )
    subscription = Moving()

    subscription.lags = {("t", p): 10 * p for p in range(4)}
    await report(consumer, subscription)
    assert reported("g-lag") == {"0": 0, "1": 10, "2": 20, "3": 30}

    subscription.lags = {("t", 0): 5, ("t", 1): 0}  # 2 and 3 went to another member
    await report(consumer, subscription)
    assert reported("g-lag") == {"0": 5, "1": 0}

    consumer._forget_lag(set(consumer._lag_reported))  # as the consumer stops
    assert reported("g-lag") == {}
