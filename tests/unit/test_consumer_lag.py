"""The consumer-lag gauge shows only the partitions a member has now."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared import consumer_lag
from shared.consumer import EventConsumer
from shared.consumer_lag import LagGauges


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


async def test_partitions_that_moved_to_another_member_leave_the_gauge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_lag, "LAG_REPORT_INTERVAL_S", 0.0)  # (at most every 5 s)
    gauges = LagGauges("lagging", "g-lag")
    subscription: Any = Moving()

    subscription.lags = {("t", p): 10 * p for p in range(4)}
    await gauges.report(subscription)
    assert reported("g-lag") == {"0": 0, "1": 10, "2": 20, "3": 30}

    subscription.lags = {("t", 0): 5, ("t", 1): 0}  # 2 and 3 went to another member
    await gauges.report(subscription)
    assert reported("g-lag") == {"0": 5, "1": 0}

    gauges.forget_all()  # as the consumer stops
    assert reported("g-lag") == {}


async def test_a_revocation_leaves_every_partition_to_the_next_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_lag, "LAG_REPORT_INTERVAL_S", 60.0)
    gauges = LagGauges("lagging", "g-revoked")
    subscription: Any = Moving()
    subscription.lags = {("t", 0): 3, ("t", 1): 4}
    await gauges.report(subscription)

    gauges.revoked()
    assert reported("g-revoked") == {}
    subscription.lags = {("t", 1): 2}  # what it keeps is reported at the next poll, at once
    await gauges.report(subscription)
    assert reported("g-revoked") == {"1": 2}


class Member:
    """A subscription whose poll fails after reporting its lag, or whose join fails."""

    def __init__(self, joins: bool) -> None:
        self.joins = joins
        self.polls = 0

    async def start(self) -> None:
        if not self.joins:
            raise ConnectionError("group coordinator not available")

    async def poll(self, *, max_records: int, timeout: float) -> list[Any]:
        self.polls += 1
        if self.polls > 1:  # (the first poll's lag is reported)
            raise ConnectionError("database is down")
        return []

    async def lag(self) -> dict[tuple[str, int], int]:
        return {("t", 0): 7}

    async def close(self) -> None:
        pass


class Rejoining:
    """A bus whose first member joins and whose later ones cannot."""

    def __init__(self) -> None:
        self.members = [Member(joins=True), Member(joins=False)]

    async def ensure_topics(self, topics: list[str]) -> None:
        pass

    def subscribe(self, **_: Any) -> Member:
        return self.members.pop(0)


async def test_a_member_that_cannot_rejoin_its_group_leaves_the_lag_to_whoever_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_lag, "LAG_REPORT_INTERVAL_S", 0.0)
    consumer = EventConsumer(
        service="lagging",
        group="g-rejoin",
        bus=Rejoining(),  # type: ignore[arg-type]
        db=None,  # type: ignore[arg-type]  # nothing is applied
        inbox=None,  # type: ignore[arg-type]
        catalog=None,  # type: ignore[arg-type]
        handlers={},
        topics=["t"],
    )
    with pytest.raises(ConnectionError, match="database"):
        await consumer.run()
    assert reported("g-rejoin") == {"0": 7}  # a failed run keeps it: it is still the owner

    with pytest.raises(ConnectionError, match="coordinator"):
        await consumer.run()
    assert reported("g-rejoin") == {}
