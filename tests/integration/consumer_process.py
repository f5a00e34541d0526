"""A consumer process for the crash tests: applies Ping events, optionally dies mid-way.

Usage: python -m tests.integration.consumer_process BUS DATABASE_URL TOPIC GROUP [--crash]
BUS is `kafka:<bootstrap>` or `local:<path>`. With --crash the process SIGKILLs itself right
after the database commit of the first batch, before the offset commit. It prints one JSON
line per outcome so the test can follow it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.bus.kafka import KafkaBus
from shared.bus.local import LocalBus
from shared.bus.port import Bus, Record
from shared.consumer import ConsumerHooks, EventConsumer
from shared.db import Database
from shared.inbox import Inbox
from shared.observability.logging import configure_logging
from tests.support import Ping, catalog_with_ping, create_schema, inbox_table, record_effect


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def make_bus(spec: str) -> Bus:
    kind, _, where = spec.partition(":")
    if kind == "kafka":
        return KafkaBus(where, client_id="crash-test", partitions=4, session_timeout_ms=6000)
    return LocalBus(Path(where), partitions=4)


async def main(bus_spec: str, url: str, topic: str, group: str, crash: bool) -> None:
    configure_logging(level="warning")  # logs to stderr; stdout is for report lines
    bus = make_bus(bus_spec)
    db = Database(url)
    await create_schema(db)
    await bus.start()

    async def after_db_commit(records: Sequence[Record]) -> None:
        say(event="db_committed", records=len(records))
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)

    async def on_duplicate(envelope: object) -> None:
        say(event="duplicate", id=str(getattr(envelope, "id", "")))

    consumer = EventConsumer(
        service="crash-test",
        group=group,
        bus=bus,
        db=db,
        inbox=Inbox(inbox_table),
        catalog=catalog_with_ping(topic),
        handlers={Ping: [record_effect]},
        hooks=ConsumerHooks(after_db_commit=after_db_commit, on_duplicate=on_duplicate),
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, consumer.stop)
    say(event="started")
    await consumer.run()
    await bus.close()
    await db.dispose()
    say(event="stopped")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(*args[:4], crash="--crash" in args))
