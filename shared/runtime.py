"""A service at run time: its database, outbox relay and consumers, started and stopped once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from fastapi import APIRouter
from sqlalchemy import MetaData, Table

from shared.bus.kafka import KafkaBus
from shared.bus.local import LocalBus
from shared.bus.port import Bus, BusError
from shared.consumer import ConsumerHooks, EventConsumer
from shared.db import Database
from shared.events.catalog import CATALOG, EventCatalog, Topics
from shared.handler_context import Handlers
from shared.inbox import Inbox
from shared.observability import metrics
from shared.observability.logging import quieted
from shared.outbox import Outbox
from shared.outbox_relay import OutboxRelay
from shared.settings.base import ServiceSettings
from shared.sqlite_files import is_sqlite_file

log = structlog.get_logger(__name__)

STOP_TIMEOUT_S = 15.0  # what the relay, consumers and workers have together to finish


def restart_delay(
    previous: float | None, *, ran_for: float, first: float = 0.5, most: float = 30.0
) -> float:
    """How long to wait before restarting what failed after running `ran_for` seconds:
    doubling from `first` while it keeps failing, up to `most`; from `first` again once it
    had run for `most` (it had recovered: a new outage is not the old one going on)."""
    if previous is None or ran_for >= most:
        return first
    return min(previous * 2, most)


class Worker(Protocol):
    """Background work a service runs for its whole life; `stop()` makes `run()` return."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class ServiceDefinition:
    """Everything that makes one service: tables, routes, event handlers, migrations."""

    name: str
    metadata: MetaData
    outbox_tables: tuple[Table, Table]
    inbox_table: Table
    migrations: Path
    routers: Sequence[APIRouter] = ()
    handlers: Callable[[ServiceRuntime], Handlers] | None = None
    summary: str = ""
    # Paths whose request bodies may exceed the default limit (streamed imports).
    body_limits: Mapping[str, int] = field(default_factory=dict)
    # Long-running work of the service besides consuming (rescoring, timers...).
    workers: Callable[[ServiceRuntime], Sequence[Worker]] | None = None

    @property
    def consumer_group(self) -> str:
        return f"handoff.{self.name}"


def bus_from_settings(settings: ServiceSettings) -> Bus:
    """Kafka when `KAFKA_BOOTSTRAP_SERVERS` is set, else the local SQLite log."""
    if settings.kafka_bootstrap_servers:
        return KafkaBus(
            settings.kafka_bootstrap_servers,
            client_id=f"handoff-{settings.service}",
            partitions=settings.topic_partitions,
            replication_factor=settings.kafka_replication_factor,
        )
    return LocalBus(settings.local_bus_path(), partitions=settings.topic_partitions)


async def check_bus(bus: Bus, *, timeout: float = 15.0) -> None:
    """Raise `BusError` now if a service could not start on `bus`: a local log that another
    process holds or that is not a SQLite file, a Kafka cluster that does not answer."""
    if isinstance(bus, LocalBus):
        try:
            bus.check_free()
            sqlite = is_sqlite_file(bus.path)
        except OSError as exc:
            raise BusError(f"cannot use {bus.path}: {exc.strerror or exc}") from exc
        if not sqlite:
            raise BusError(f"{bus.path} is not a SQLite database (the local event log)")
    elif isinstance(bus, KafkaBus):
        # (aiokafka logs each failed attempt; the error says it once)
        with quieted("aiokafka", logging.CRITICAL):
            try:
                await asyncio.wait_for(bus.ping(), timeout)
            except TimeoutError:
                raise BusError(
                    f"Kafka at {bus.bootstrap_servers} did not answer in {timeout:.0f} s"
                ) from None
            except ValueError as exc:  # (aiokafka's reading of a malformed address)
                raise BusError(f"{bus.bootstrap_servers!r} is not host:port[,...]: {exc}") from exc


@dataclass
class ServiceRuntime:
    """Owns one service's live resources; `start()` and `stop()` bracket its life."""

    definition: ServiceDefinition
    settings: ServiceSettings
    bus: Bus
    owns_bus: bool = True
    catalog: EventCatalog = CATALOG
    consumer_hooks: ConsumerHooks | None = None
    db: Database = field(init=False)
    outbox: Outbox = field(init=False)
    inbox: Inbox = field(init=False)
    relay: OutboxRelay = field(init=False)
    consumers: list[EventConsumer] = field(init=False, default_factory=list)
    workers: list[Worker] = field(init=False, default_factory=list)
    # Service-specific companions that live as long as the runtime (e.g. batchers).
    state: dict[str, Any] = field(init=False, default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _stopping: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.db = Database(self.settings.resolved_database_url())
        self.outbox = Outbox(
            service=self.name, tables=self.definition.outbox_tables, catalog=self.catalog
        )
        self.inbox = Inbox(self.definition.inbox_table)
        self.relay = OutboxRelay(
            db=self.db,
            outbox=self.outbox,
            bus=self.bus,
            batch_size=self.settings.outbox_batch_size,
            linger=self.settings.outbox_linger_ms / 1000,
        )

    @property
    def name(self) -> str:
        return self.definition.name

    async def start(self) -> None:
        """Start the bus (if ours), create topics, then the relay and consumers."""
        if self.owns_bus:
            await self.bus.start()
        await self.bus.ensure_topics(Topics.ALL)
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-relay"))
        for worker in self.definition.workers(self) if self.definition.workers else ():
            self.workers.append(worker)
            self._tasks.append(asyncio.create_task(worker.run(), name=f"{self.name}-worker"))
        handlers = self.definition.handlers(self) if self.definition.handlers else {}
        if handlers:
            consumer = EventConsumer(
                service=self.name,
                group=self.definition.consumer_group,
                bus=self.bus,
                db=self.db,
                inbox=self.inbox,
                catalog=self.catalog,
                handlers=handlers,
                outbox=self.outbox,
                batch_size=self.settings.consumer_batch_size,
                max_attempts=self.settings.consumer_max_attempts,
                hooks=self.consumer_hooks,
            )
            self.consumers.append(consumer)
            self._tasks.append(
                asyncio.create_task(self._supervise(consumer), name=f"{self.name}-consumer")
            )
        log.info(
            "service started",
            service=self.name,
            bus=type(self.bus).__name__,
            database=self.db.dialect,
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    async def _supervise(self, consumer: EventConsumer) -> None:
        """Restart a failed consumer (e.g. database outage); it resumes from committed offsets."""
        loop = asyncio.get_running_loop()
        delay: float | None = None
        while True:
            began = loop.time()
            try:
                await consumer.run()
                return
            except Exception:
                if self._stopping.is_set():
                    log.exception("consumer failed while stopping", service=self.name)
                    return
                delay = restart_delay(delay, ran_for=loop.time() - began)
                log.exception("consumer failed; restarting", service=self.name, delay=delay)
                with contextlib.suppress(TimeoutError):  # a stop ends the wait
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                    return

    async def stop(self) -> None:
        """Finish in-flight work, commit, and close everything (SIGTERM path): the relay,
        consumers and workers have 15 s together, then what is still running is cancelled
        (a consumer's uncommitted batch is read again after the restart)."""
        self._stopping.set()
        for consumer in self.consumers:
            consumer.stop()
        for worker in self.workers:
            worker.stop()
        self.relay.stop()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in running:
                log.warning("task still running at stop; cancelled", task=task.get_name())
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for task in self._tasks:
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.error("task ended with an error", task=task.get_name(), error=repr(error))
        self._tasks.clear()
        if self.owns_bus:
            await self.bus.close()
        await self.db.dispose()
        log.info("service stopped", service=self.name)

    async def readiness(self) -> dict[str, str]:
        """`ok` or the error, for the database and the bus."""
        checks: dict[str, str] = {}
        for name, probe in (("database", self.db.ping), ("bus", self.bus.ping)):
            try:
                await asyncio.wait_for(probe(), timeout=5)
                checks[name] = "ok"
            except Exception as exc:  # the detail goes to the log, not to anonymous callers
                log.warning("not ready", service=self.name, dependency=name, error=repr(exc))
                checks[name] = "unavailable"
        return checks

    async def update_gauges(self) -> None:
        with contextlib.suppress(Exception):
            backlog, age = await self.relay.backlog()
            metrics.OUTBOX_BACKLOG.labels(self.name).set(backlog)
            metrics.OUTBOX_AGE.labels(self.name).set(age)
