"""Topic administration on the real broker: what the tests' session clean-up relies on."""

from __future__ import annotations

import pytest

from shared.bus.kafka import KafkaBus
from tests.conftest import unique
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_topics_made_by_the_bus_can_be_listed_and_deleted(kafka_servers: str) -> None:
    bus = KafkaBus(kafka_servers, partitions=2)
    topics = [unique("t.admin"), unique("t.admin")]
    await bus.ensure_topics(topics)
    assert set(topics) <= await bus.list_topics()
    await bus.delete_topics(topics)

    async def gone() -> bool:
        return not set(topics) & await bus.list_topics()

    await eventually(gone)
    await bus.ensure_topics(topics)  # forgotten as known: made again, not assumed present
    assert set(topics) <= await bus.list_topics()
    await bus.delete_topics(topics)
