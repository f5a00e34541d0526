"""The consumer-lag gauges of one consumer-group member: the partitions it has now, each
reported at most every `LAG_REPORT_INTERVAL_S`, none of those it no longer has."""

from __future__ import annotations

import asyncio
import contextlib

from shared.bus.port import Subscription
from shared.observability import metrics

LAG_REPORT_INTERVAL_S = 5.0


class LagGauges:
    """Exports the lag of a member's partitions as soon as they are polled, and leaves a
    partition's gauge to its next owner when it moves (a value left behind would be summed
    with the new owner's for ever)."""

    def __init__(self, service: str, group: str) -> None:
        self.service = service
        self.group = group
        self._last_report = float("-inf")
        self._reported: set[tuple[str, int]] = set()  # partitions with a gauge
        self._revocations = 0  # how many times this member's partitions were taken away

    async def report(self, subscription: Subscription) -> None:
        """Export the lag of the subscription's partitions (at most every interval)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_report < LAG_REPORT_INTERVAL_S:
            return
        self._last_report = now
        revocations = self._revocations
        with contextlib.suppress(Exception):
            lags = await subscription.lag()
            if not lags or revocations != self._revocations:
                # Not given partitions yet (a member still joining its group), or an answer
                # about partitions revoked meanwhile: ask again after the next poll.
                self._last_report = float("-inf")
                return
            for (topic, partition), lag in lags.items():
                metrics.CONSUMER_LAG.labels(self.service, self.group, topic, str(partition)).set(
                    lag
                )
            # Partitions this member no longer has: their lag is another member's to report.
            self._forget(self._reported - lags.keys())
            self._reported = set(lags)

    def revoked(self) -> None:
        """The member's partitions are moving: forget them; whatever it keeps is reported
        again at the next poll."""
        self._revocations += 1
        self.forget_all()
        self._last_report = float("-inf")

    def forget_all(self) -> None:
        """Remove every gauge of this member (it stops)."""
        self._forget(set(self._reported))

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.service, self.group, topic, str(partition))
        self._reported -= partitions
