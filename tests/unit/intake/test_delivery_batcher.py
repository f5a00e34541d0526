"""Group commit: deliveries queued together go in one batch; under load a batch gathers
as many as recent batches held; a lone delivery never waits."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from services.intake.delivery_batcher import DeliveryBatcher, Presumption
from services.intake.leads import KnownAccounts
from services.intake.providers import SourceConfig
from services.intake.webhook_intake import Delivery, DeliveryReport

SOURCE = SourceConfig(name="hs", provider="hubspot", secret="s" * 16)
FOREVER = 3600.0  # a gather that must end because the batch is complete, not by timing out


class RecordingBatcher(DeliveryBatcher):
    def __init__(self, *, gather_s: float) -> None:
        runtime: Any = SimpleNamespace(db=SimpleNamespace(is_postgres=False))
        super().__init__(runtime, sales_owned=frozenset(), gather_s=gather_s)
        self.batches: list[int] = []

    async def _apply(self, deliveries: list[Delivery]) -> list[DeliveryReport]:
        self.batches.append(len(deliveries))
        return [DeliveryReport(accepted=len(d.items)) for d in deliveries]


def delivery() -> Delivery:
    return Delivery([], SOURCE)


async def arriving_one_by_one(batcher: DeliveryBatcher, count: int) -> list[DeliveryReport]:
    """`count` deliveries, each verified in its own step of the loop (as requests are)."""

    async def one(n: int) -> DeliveryReport:
        for _ in range(n):
            await asyncio.sleep(0)
        return await batcher.apply(delivery())

    return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(count))), 30)


async def test_a_lone_delivery_goes_straight_through() -> None:
    batcher = RecordingBatcher(gather_s=FOREVER)
    await asyncio.wait_for(batcher.apply(delivery()), 30)
    await asyncio.wait_for(batcher.apply(delivery()), 30)
    assert batcher.batches == [1, 1]


async def test_under_load_a_batch_gathers_as_many_as_recent_batches_held() -> None:
    batcher = RecordingBatcher(gather_s=FOREVER)
    batcher._recent.append(5)  # the load so far: batches of five
    reports = await arriving_one_by_one(batcher, 5)
    assert batcher.batches == [5]  # not 1 + 4: the first waited for the others
    assert len(reports) == 5


async def test_when_the_load_falls_the_gather_times_out_and_expects_less() -> None:
    batcher = RecordingBatcher(gather_s=0.01)
    batcher._recent.extend([6] * 16)  # the window of recent batches, all of six
    await arriving_one_by_one(batcher, 2)
    assert batcher.batches == [2]  # nobody else came: what was there went
    batcher._recent.extend([2] * 15)  # (the batches of six age out)
    batcher.gather_s = FOREVER
    await arriving_one_by_one(batcher, 2)
    assert batcher.batches == [2, 2]  # two is what a batch now expects


def test_after_a_batch_that_was_not_new_the_next_ones_look_up_for_longer_each_time() -> None:
    presumption = Presumption(min_backoff=2, max_backoff=8)

    def run(outcomes: list[bool | None]) -> list[bool]:
        """Each batch: whether it was taken to be new; `outcomes` say how those went."""
        taken = []
        for outcome in outcomes:
            now = presumption.now()
            taken.append(now)
            if now:
                assert outcome is not None
                presumption.held(outcome)
        return taken

    assert run([True, True]) == [True, True]
    assert run([False, None, None, False, None, None, None, None]) == [
        True, False, False, True, False, False, False, False,  # 2, then 4 looked up
    ]  # fmt: skip
    longest = [False] + [None] * 8
    assert run(longest + longest) == ([True] + [False] * 8) * 2  # 8: the most it waits
    assert run([True, True]) == [True, True]  # held: the next failure waits 2 again
    assert run([False, None, None, True]) == [True, False, False, True]


def test_known_accounts_keep_the_latest_domains_up_to_their_limit() -> None:
    def items(*domains: str | None) -> Any:
        return [SimpleNamespace(account_domain=lambda d=d: d) for d in domains]

    known = KnownAccounts(limit=2)
    known.learn({"a.com": "1", None: "x"})
    known.learn({"a.com": "other"})  # an account's id never changes: the first is kept
    assert known.of(items("a.com", None)) == {"a.com": "1"}

    known.learn({"b.com": "2", "c.com": "3"})  # a.com, the oldest, makes room
    assert len(known) == 2
    assert known.of(items("a.com", "b.com", "c.com")) == {"b.com": "2", "c.com": "3"}
