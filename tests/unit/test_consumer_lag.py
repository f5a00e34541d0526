"""The consumer-lag gauge shows only the partitions a member has now."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared import consumer_lag
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
