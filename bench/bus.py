"""Bus benchmark: outbox -> relay -> bus -> inbox consumer, on LocalBus and on Kafka, against
raw aiokafka on the same broker. See bench/README.md for the method.

    PYTHONPATH=. .venv/bin/python bench/bus.py [--events N] [--rate R] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import os
import resource
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `handoff bench` runs us by path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import insert

from bench.common import (
    PAD,
    BenchPing,
    FreshPgDatabase,
    Samples,
    above_zero,
    add_gc_threshold,
    at_least,
    burst,
    catalog_with_bench_ping,
    create_schema,
    effects,
    inbox_table,
    kafka_bootstrap_servers,
    listener_pid,
    machine,
    outbox_tables,
    paced,
    postgres_admin_url,
    postgres_cpu_s,
    postmaster_pid,
    proc_cpu_s,
    settle,
    summarize,
    system_busy,
    unique,
    write_results,
    zero_or_more,
)
from shared.bus.kafka import KafkaBus
from shared.bus.local import LocalBus
from shared.bus.port import Bus, OutgoingMessage, Record
from shared.consumer import ConsumerHooks, EventConsumer
from shared.db import Database
from shared.events.codec import build_envelope, to_binary
from shared.handler_context import HandlerContext
from shared.inbox import Inbox
from shared.observability.logging import configure_logging
from shared.outbox import Outbox
from shared.outbox_relay import OutboxRelay
from shared.process import run_on_service_loop, tune_collector
from shared.settings.base import ServiceSettings

console = Console(width=None if sys.stdout.isatty() else 160)
LEADS = 1000  # distinct subjects (keys); events go round-robin over them
TARGET_LOCAL_RATE = 5000.0
TARGET_LOCAL_P99_MS = 50.0
TARGET_KAFKA_RATIO = 0.5
_SERVICE_DEFAULTS = ServiceSettings.model_fields  # relay and consumer run as the services do


class Cpu:
    """CPU used by this process (all threads), by its event loop (the main thread; the rest
    is driver threads: aiosqlite, asyncpg has none), by the consumer process when the
    consumer side runs in its own, by the Kafka broker and the PostgreSQL server when they
    run on this machine, and by the whole machine over a phase."""

    def __init__(
        self, child: int | None = None, *, broker: int | None = None, postmaster: int | None = None
    ) -> None:
        self.child = child
        self.broker = broker
        self.postmaster = postmaster
        self.t0 = time.perf_counter()
        self.loop0 = time.thread_time()
        self.proc0 = self._proc()
        self.child0 = proc_cpu_s(child) if child else 0.0
        self.broker0 = proc_cpu_s(broker) if broker else 0.0
        self.pg0 = postgres_cpu_s(postmaster)
        self.sys0 = system_busy()

    @staticmethod
    def _proc() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def result(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        busy1, total1 = system_busy()
        busy0, total0 = self.sys0
        out = {
            "process_cpu_cores": (self._proc() - self.proc0) / wall,  # 1.0 = one core busy
            "loop_cpu_cores": (time.thread_time() - self.loop0) / wall,
            "machine_busy": (busy1 - busy0) / max(1, total1 - total0),  # 1.0 = all cores busy
        }
        if self.child:  # /proc counts in clock ticks (10 ms): fine over a phase
            out["consumer_process_cpu_cores"] = (proc_cpu_s(self.child) - self.child0) / wall
        if self.broker:
            out["broker_cpu_cores"] = (proc_cpu_s(self.broker) - self.broker0) / wall
        if self.postmaster:  # (backends that end during the phase take their CPU with them)
            out["postgres_cpu_cores"] = (postgres_cpu_s(self.postmaster) - self.pg0) / wall
        return out


class WireMessages:
    """Kafka messages shaped like the pipeline's: same key, CloudEvents headers, value size."""

    def __init__(self) -> None:
        self.leads = [str(uuid.uuid4()) for _ in range(LEADS)]
        template = build_envelope(
            catalog_with_bench_ping("t"),
            BenchPing(lead_id=uuid.uuid4(), n=0, t_sched=0, t_add=0, pad=PAD),
            source_service="bench",
            subject=self.leads[0],
            sequence=1,
        )
        _key, self.headers, _value = to_binary(template)

    def make(self, n: int, t_sched: int) -> tuple[str, list[tuple[str, bytes]], bytes]:
        lead = self.leads[n % LEADS]
        headers = list(self.headers)
        headers[1] = ("ce_id", str(uuid.uuid4()).encode())
        value = orjson.dumps(
            {
                "lead_id": lead,
                "n": n,
                "t_sched": t_sched,
                "t_add": time.perf_counter_ns(),
                "pad": PAD,
            }
        )
        return lead, headers, value


def _stamps(value: bytes | None) -> tuple[int, int]:
    data = orjson.loads(value or b"{}")
    return data["t_sched"], data["t_add"]


INSERT_EFFECT = insert(effects)


class Sink:
    """Collects per-event timestamps on the consumer side; `expect` arms a phase's end."""

    def __init__(self) -> None:
        self.samples = Samples()
        self.pending: list[tuple[int, int, int]] = []
        self._target = 0
        self._done = asyncio.Event()
        self._on_applied: Callable[[int], None] = lambda _n: None

    def expect(self, count: int, on_applied: Callable[[int], None]) -> asyncio.Event:
        self.samples = Samples()
        self._target = count
        self._on_applied = on_applied
        self._done.clear()
        return self._done

    def applied(self) -> None:
        """The events in `pending` are applied (their consumer transaction committed)."""
        now = time.perf_counter_ns()
        samples = self.samples
        for t_sched, t_add, t_handled in self.pending:
            samples.t_sched.append(t_sched)
            samples.t_add.append(t_add)
            samples.t_handled.append(t_handled)
            samples.t_applied.append(now)
        self._on_applied(len(self.pending))
        self.pending.clear()
        if len(samples) >= self._target:
            self._done.set()


class ConsumerSide:
    """What reads the events: runs in the benchmark's process or in a process of its own."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class Measured:
    """A path: writes events (`write`) and tells when they are applied (`expect`)."""

    def __init__(self, name: str) -> None:
        self.topic = unique(f"bench.{name}")  # fresh topic and consumer group every run
        self.group = unique(f"bench-{name}")
        self.sink = Sink()
        self.remote: RemoteConsumer | None = None  # the consumer side's own process
        self.writers = 1  # burst: writes in flight at once (--writers, Kafka rows)

    @property
    def samples(self) -> Samples:
        return self.sink.samples

    async def write(self, batch: Sequence[tuple[int, int]]) -> None:
        """Offer these events [(n, t_sched_ns), ...] to the path."""
        raise NotImplementedError

    def expect(self, count: int, on_applied: Callable[[int], None]) -> asyncio.Event:
        if self.remote is not None:
            return self.remote.expect(count, on_applied)
        return self.sink.expect(count, on_applied)


# --- the handoff pipeline (outbox -> relay -> bus -> EventConsumer + inbox) -----------------


class PipelineConsumer(ConsumerSide):
    """EventConsumer + Inbox into the consumer's database; the handler writes one row."""

    def __init__(
        self,
        sink: Sink,
        *,
        bus: Bus,
        db: Database,
        topic: str,
        group: str,
        batch_size: int,
        handler: str,
    ) -> None:
        super().__init__(sink)
        self.bus = bus
        self.db = db
        self.handler = handler
        self.consumer = EventConsumer(
            service="bench-consumer",
            group=group,
            bus=bus,
            db=db,
            inbox=Inbox(inbox_table),
            catalog=catalog_with_bench_ping(topic),
            handlers={BenchPing: [self._handle]},
            batch_size=batch_size,
            hooks=ConsumerHooks(after_db_commit=self._committed),
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.consumer.run())

    async def stop(self) -> None:
        self.consumer.stop()
        if self._task:
            await asyncio.wait_for(self._task, timeout=60)

    async def _handle(self, ctx: HandlerContext, payload: BenchPing) -> None:
        """The consumer's effect: one row per event, written as `--handler` says."""
        self.sink.pending.append((payload.t_sched, payload.t_add, time.perf_counter_ns()))
        row = {"event_id": ctx.event_id, "lead_id": str(payload.lead_id), "n": payload.n}
        if self.handler == "execute":  # the obvious handler: one INSERT statement per event
            await ctx.session.execute(insert(effects).values(**row))
        elif self.handler == "prebuilt":  # the statement built once, parameters per event
            await ctx.session.execute(INSERT_EFFECT, row)
        else:  # "staged": HandlerContext.stage, one executemany as the batch commits
            ctx.stage(effects, **row)

    async def _committed(self, records: Sequence[Record]) -> None:
        self.sink.applied()


class Pipeline(Measured):
    """Producer side: `Outbox.add` in transactions and an `OutboxRelay` to the bus."""

    def __init__(
        self,
        *,
        bus: Bus,
        producer_db: Database,
        relay_batch: int,
        relay_linger_ms: int,
    ) -> None:
        super().__init__("bus")
        self.producer_db = producer_db
        self.bus = bus
        catalog = catalog_with_bench_ping(self.topic)
        self.outbox = Outbox(service="bench-producer", tables=outbox_tables, catalog=catalog)
        self.relay = OutboxRelay(
            db=producer_db,
            outbox=self.outbox,
            bus=bus,
            batch_size=relay_batch,
            linger=relay_linger_ms / 1000,
        )
        self.leads = [uuid.uuid4() for _ in range(LEADS)]
        self.subjects = [str(lead) for lead in self.leads]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await create_schema(self.producer_db)
        await self.bus.ensure_topics([self.topic])
        self._task = asyncio.create_task(self.relay.run())

    async def stop(self) -> None:
        self.relay.stop()
        if self._task:
            await asyncio.wait_for(self._task, timeout=60)

    async def write(self, batch: Sequence[tuple[int, int]]) -> None:
        """One producer transaction: an event per item through `Outbox.add`."""
        async with self.producer_db.transaction() as session:
            for n, t_sched in batch:
                i = n % LEADS
                await self.outbox.add(
                    session,
                    BenchPing(
                        lead_id=self.leads[i],
                        n=n,
                        t_sched=t_sched,
                        t_add=time.perf_counter_ns(),
                        pad=PAD,
                    ),
                    subject=self.subjects[i],
                )


# --- the KafkaBus adapter alone and the baseline, raw aiokafka -------------------------------


class AdapterConsumer(ConsumerSide):
    """A KafkaBus subscription polling and committing per batch, as EventConsumer does."""

    def __init__(self, sink: Sink, *, bus: KafkaBus, topic: str, group: str, batch: int) -> None:
        super().__init__(sink)
        self.subscription = bus.subscribe(group=group, topics=[topic])
        self.batch = batch
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.subscription.start()
        self._task = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            await asyncio.wait_for(self._task, timeout=30)
        await self.subscription.close()

    async def _consume(self) -> None:
        pending = self.sink.pending
        while not self._stopping:
            records = await self.subscription.poll(max_records=self.batch, timeout=0.5)
            if not records:
                continue
            now = time.perf_counter_ns()
            for r in records:
                pending.append((*_stamps(r.value), now))
            await self.subscription.commit(records)
            self.sink.applied()


class KafkaBusOnly(Measured):
    """The KafkaBus adapter alone, no database: `bus.publish` per batch (as the relay calls
    it); the consumer side is an `AdapterConsumer`."""

    def __init__(self, bus: KafkaBus) -> None:
        super().__init__("adapter")
        self.bus = bus
        self.messages = WireMessages()

    async def write(self, batch: Sequence[tuple[int, int]]) -> None:
        out = []
        for n, t_sched in batch:
            key, headers, value = self.messages.make(n, t_sched)
            out.append(OutgoingMessage(topic=self.topic, key=key, value=value, headers=headers))
        await self.bus.publish(out)


class RawConsumer(ConsumerSide):
    """One AIOKafkaConsumer group member committing after every batch."""

    def __init__(self, sink: Sink, *, servers: str, topic: str, group: str, batch: int) -> None:
        super().__init__(sink)
        self.batch = batch
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2500,
            fetch_max_wait_ms=100,
        )
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            await asyncio.wait_for(self._task, timeout=30)
        await self.consumer.stop()

    async def _consume(self) -> None:
        pending = self.sink.pending
        while not self._stopping:
            batches = await self.consumer.getmany(timeout_ms=500, max_records=self.batch)
            if not batches:
                continue
            now = time.perf_counter_ns()
            for messages in batches.values():
                for m in messages:
                    pending.append((*_stamps(m.value), now))
            await self.consumer.commit()
            self.sink.applied()


class RawKafka(Measured):
    """AIOKafkaProducer (acks=all, idempotent, KafkaBus's settings), messages shaped like
    the pipeline's; the consumer side is a `RawConsumer`."""

    def __init__(self, servers: str) -> None:
        super().__init__("raw")
        self.servers = servers
        self.producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            client_id=unique("bench-raw"),
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=30_000,
        )
        self.messages = WireMessages()
        self._sends: list[asyncio.Future[Any]] = []

    async def start(self, bus_for_topics: KafkaBus) -> None:
        await bus_for_topics.ensure_topics([self.topic])  # same partitions as the pipeline's
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def write(self, batch: Sequence[tuple[int, int]]) -> None:
        for n, t_sched in batch:
            key, headers, value = self.messages.make(n, t_sched)
            self._sends.append(
                await self.producer.send(self.topic, value, key=key.encode(), headers=headers)
            )
        if len(self._sends) > 5000:  # surface delivery errors, keep the list short
            done = [f for f in self._sends if f.done()]
            for f in done:
                f.result()
            self._sends = [f for f in self._sends if not f.done()]


# --- the consumer side in a process of its own (as deployed) ---------------------------------


def consumer_spec(
    kind: str, path: Measured, args: argparse.Namespace, **extra: Any
) -> dict[str, Any]:
    """What a consumer process needs to build its side of `path` (picklable)."""
    return {
        "kind": kind,
        "topic": path.topic,
        "group": path.group,
        "batch": args.consumer_batch,
        "partitions": args.partitions,
        "handler": args.handler,
        "gc_freeze": args.gc_freeze,
        "gc_threshold": args.gc_threshold,
        **extra,
    }


async def build_consumer(
    spec: dict[str, Any], sink: Sink, stack: contextlib.AsyncExitStack
) -> ConsumerSide:
    """The consumer side described by `spec`; its resources are closed by `stack`."""
    kind = spec["kind"]
    if kind == "raw":
        return RawConsumer(
            sink,
            servers=spec["servers"],
            topic=spec["topic"],
            group=spec["group"],
            batch=spec["batch"],
        )
    bus: Bus
    if spec.get("servers"):
        kafka = KafkaBus(
            spec["servers"], client_id=unique("bench-c"), partitions=spec["partitions"]
        )
        await kafka.start()
        stack.push_async_callback(kafka.close)
        bus = kafka
    else:
        bus = spec["bus"]  # in process only (LocalBus)
    if kind == "adapter":
        assert isinstance(bus, KafkaBus)
        return AdapterConsumer(
            sink, bus=bus, topic=spec["topic"], group=spec["group"], batch=spec["batch"]
        )
    db = Database(spec["db_url"])
    stack.push_async_callback(db.dispose)
    await create_schema(db)
    return PipelineConsumer(
        sink,
        bus=bus,
        db=db,
        topic=spec["topic"],
        group=spec["group"],
        batch_size=spec["batch"],
        handler=spec["handler"],
    )


def consumer_process(spec: dict[str, Any], conn: Connection) -> None:
    """Entry point of a consumer process: commands from `conn`, results back over it."""
    run_on_service_loop(_consumer_process(spec, conn))


def receive_on_thread(conn: Connection, deliver: Callable[[Any], None]) -> None:
    """Hand every message arriving on `conn` to `deliver`, on the running loop.

    A daemon thread does the blocking reads: a pipe watched by the loop (`add_reader`) is
    made non-blocking by uvloop, and a message larger than the pipe's buffer (a phase's
    timestamps) then fails half-read. The thread ends when the other side closes.
    """
    loop = asyncio.get_running_loop()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            try:
                loop.call_soon_threadsafe(deliver, message)
            except RuntimeError:  # the loop has closed (a run that failed): nobody listens
                return

    threading.Thread(target=read, name="pipe-reader", daemon=True).start()


async def _consumer_process(spec: dict[str, Any], conn: Connection) -> None:
    configure_logging(level="warning", json=False)
    tune_collector(spec["gc_threshold"])
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    receive_on_thread(conn, commands.put_nowait)
    sink = Sink()
    progress = [0, time.perf_counter()]

    def on_applied(k: int) -> None:  # progress for the parent's bar, a few times a second
        progress[0] += k
        if time.perf_counter() - progress[1] > 0.2:
            conn.send(("progress", progress[0]))
            progress[0], progress[1] = 0, time.perf_counter()

    async with contextlib.AsyncExitStack() as stack:
        side = await build_consumer(spec, sink, stack)
        await side.start()
        stack.push_async_callback(side.stop)
        conn.send(("ready", os.getpid()))
        while True:
            command, value = await commands.get()
            if command == "stop":
                break
            if command == "freeze":
                gc.collect()
                gc.freeze()
                continue
            done = sink.expect(value, on_applied)
            await done.wait()
            s = sink.samples
            conn.send(("done", (progress[0], s.t_sched, s.t_add, s.t_handled, s.t_applied)))
            progress[0] = 0
    conn.send(("stopped", None))


class RemoteConsumer:
    """The parent's handle on a consumer process: phases are armed and ended over a pipe."""

    def __init__(self, spec: dict[str, Any], path: Measured) -> None:
        self.spec = spec
        self.path = path
        parent, child = multiprocessing.get_context("spawn").Pipe()
        self.conn = parent
        self.process = multiprocessing.get_context("spawn").Process(
            target=consumer_process, args=(spec, child), daemon=True
        )
        self.pid: int | None = None
        self._replies: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._on_applied: Callable[[int], None] = lambda _n: None
        self._done: asyncio.Event | None = None

    async def start(self) -> None:
        self.process.start()
        receive_on_thread(self.conn, self._read)
        kind, pid = await asyncio.wait_for(self._replies.get(), timeout=120)
        assert kind == "ready", kind
        self.pid = pid
        self.path.remote = self

    def _read(self, message: tuple[str, Any]) -> None:
        kind, value = message
        if kind == "progress":
            self._on_applied(value)
        elif kind == "done":
            rest, *stamps = value
            self._on_applied(rest)
            self.path.sink.samples = Samples(*stamps)
            assert self._done is not None
            self._done.set()
        else:
            self._replies.put_nowait((kind, value))

    def expect(self, count: int, on_applied: Callable[[int], None]) -> asyncio.Event:
        self._on_applied = on_applied
        self._done = asyncio.Event()
        self.conn.send(("expect", count))
        return self._done

    def freeze(self) -> None:
        self.conn.send(("freeze", None))

    async def stop(self) -> None:
        self.conn.send(("stop", None))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._replies.get(), timeout=60)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


# --- phases ------------------------------------------------------------------------------------


Entry = tuple[str, "Measured", bool]  # a path's name, the path, paced at --rate whatever


class Runner:
    def __init__(
        self,
        args: argparse.Namespace,
        progress: Progress,
        *,
        broker: int | None = None,
        postmaster: int | None = None,
    ) -> None:
        self.args = args
        self.progress = progress
        self.broker = broker  # the local Kafka broker's pid, for its CPU
        self.postmaster = postmaster  # the local PostgreSQL server's
        self.next_n = 0

    async def phase(
        self,
        label: str,
        path: Measured,
        *,
        count: int,
        rate: float | None,
        batch: int,
        timeout: float,
    ) -> dict[str, Any]:
        """Offer `count` events (a burst, or paced at `rate`), wait until all are applied."""
        task = self.progress.add_task(label, total=count)
        first, self.next_n = self.next_n, self.next_n + count
        done = path.expect(count, lambda k: self.progress.advance(task, k))
        cpu = Cpu(
            path.remote.pid if path.remote else None,
            broker=self.broker,
            postmaster=self.postmaster,
        )
        t_start = time.perf_counter_ns()
        if rate is None:
            producing = burst(first, count, batch, path.write, writers=path.writers)
        else:
            producing = paced(first, count, rate, batch, path.write)
        producer = asyncio.create_task(producing)
        try:
            await asyncio.wait_for(asyncio.shield(producer), timeout=timeout)
            t_written = time.perf_counter_ns()
            await asyncio.wait_for(
                done.wait(), timeout=max(1.0, timeout - (t_written - t_start) / 1e9)
            )
        except TimeoutError:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            self.progress.update(task, description=f"{label} [red](timed out)")
            raise
        result = summarize(
            path.samples,
            t_start=t_start,
            t_end=path.samples.t_applied[-1],
            offered_rate=rate,
            expected=count,
        )
        result["write_s"] = (t_written - t_start) / 1e9
        result["write_rate"] = count / result["write_s"]
        result.update(cpu.result())
        self.progress.update(task, description=f"{label} [green]{result['events_per_s']:,.0f}/s")
        return result

    async def warm(self, name: str, path: Measured) -> None:
        """Whole-pipeline warm-up (connections, group join, statement caches); not reported."""
        args = self.args
        if args.warmup == 0:
            return
        await self.phase(
            f"{name}: warm-up", path, count=args.warmup, rate=None, batch=args.txn_size, timeout=120
        )

    async def bursts(self, paths: dict[str, Entry]) -> dict[str, list[dict[str, Any]]]:
        """`--rounds` bursts per path, the paths taking turns in every round: a disturbance
        of the (shared) machine falls on one round of each, not on all of one path's."""
        args = self.args
        out: dict[str, list[dict[str, Any]]] = {key: [] for key in paths}
        for n in range(1, args.rounds + 1):
            for key, (name, path, _fixed) in paths.items():
                label = f"{name}: burst" + (f" {n}/{args.rounds}" if args.rounds > 1 else "")
                settled_s = await settle(below=args.settle) if args.settle else 0.0
                burst = await self.phase(
                    label,
                    path,
                    count=args.events,
                    rate=None,
                    batch=args.txn_size,
                    timeout=args.phase_timeout,
                )
                burst["settled_s"] = settled_s
                out[key].append(burst)
        return out

    async def paced(
        self, name: str, path: Measured, capacity: float, *, fixed_rate: bool
    ) -> dict[str, Any]:
        """Paced at --rate (`fixed_rate`: even above the burst capacity, as the LocalBus
        latency target is defined at that rate), and at 80% of capacity when below it."""
        args = self.args
        out: dict[str, Any] = {}
        if capacity >= args.rate or fixed_rate:
            count = int(args.rate * args.paced_seconds)
            overloaded = capacity < args.rate
            if overloaded:  # latency can only grow: keep the backlog (and the run) short
                count = min(count, max(1000, int(capacity * args.paced_seconds)))
            out["paced"] = await self.phase(
                f"{name}: paced {args.rate:,.0f}/s",
                path,
                count=count,
                rate=args.rate,
                batch=args.txn_size,
                timeout=args.phase_timeout + args.paced_seconds,
            )
            out["paced"]["overloaded"] = overloaded
        if capacity < args.rate:  # also: latency at a load this path can sustain
            rate = max(10.0, round(0.8 * capacity, -1))
            out["paced_sustainable"] = await self.phase(
                f"{name}: paced {rate:,.0f}/s",
                path,
                count=max(100, int(rate * args.paced_seconds)),
                rate=rate,
                batch=args.txn_size,
                timeout=args.phase_timeout + args.paced_seconds,
            )
        return out

    async def measure(self, paths: dict[str, Entry]) -> dict[str, dict[str, Any]]:
        """Warm every path up, then the burst rounds, then each path's paced phases. A
        path's `burst` is its median round (by throughput); all rounds are in `bursts`."""
        for name, path, _fixed in paths.values():
            await self.warm(name, path)
        if self.args.gc_freeze:
            gc.collect()
            gc.freeze()
            for _name, path, _fixed in paths.values():
                if path.remote:
                    path.remote.freeze()
        rounds = await self.bursts(paths)
        out: dict[str, dict[str, Any]] = {}
        for key, (name, path, fixed_rate) in paths.items():
            median = sorted(rounds[key], key=lambda r: r["events_per_s"])[len(rounds[key]) // 2]
            out[key] = {"burst": median, "bursts": rounds[key]}
            out[key].update(
                await self.paced(name, path, median["events_per_s"], fixed_rate=fixed_rate)
            )
        return out


# --- the paths ----------------------------------------------------------------------------------


async def start_consumer(
    stack: contextlib.AsyncExitStack,
    path: Measured,
    spec: dict[str, Any],
    *,
    separate: bool,
) -> None:
    """Start the consumer side of `path`: in this process, or in one of its own."""
    if separate:
        remote = RemoteConsumer(spec, path)
        await remote.start()
        stack.push_async_callback(remote.stop)
        return
    side = await build_consumer(spec, path.sink, stack)
    await side.start()
    stack.push_async_callback(side.stop)


async def open_local(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, workdir: Path
) -> Measured:
    bus = LocalBus(workdir / "events.db", partitions=args.partitions)
    await bus.start()
    stack.push_async_callback(bus.close)
    producer_db = Database(f"sqlite+aiosqlite:///{workdir / 'producer'}.db")
    stack.push_async_callback(producer_db.dispose)
    path = Pipeline(
        bus=bus,
        producer_db=producer_db,
        relay_batch=args.relay_batch,
        relay_linger_ms=args.relay_linger_ms,
    )
    await path.start()
    stack.push_async_callback(path.stop)
    # embedded mode is one process by design: the consumer side always runs here
    spec = consumer_spec(
        "pipeline", path, args, bus=bus, db_url=f"sqlite+aiosqlite:///{workdir / 'consumer'}.db"
    )
    await start_consumer(stack, path, spec, separate=False)
    return path


async def delete_topics(servers: str, topics: Sequence[str]) -> None:
    """Drop the run's topics (they keep their whole history otherwise); best effort."""
    try:
        await KafkaBus(servers, client_id=unique("bench-admin")).delete_topics(topics)
    except Exception as exc:  # cleanup must not hide the results
        console.print(f"[yellow]could not delete topics {list(topics)}: {exc}")


async def open_kafka(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, servers: str, admin_url: str
) -> Measured:
    bus = KafkaBus(servers, client_id=unique("bench"), partitions=args.partitions)
    await bus.start()
    stack.push_async_callback(bus.close)
    urls = [
        await stack.enter_async_context(FreshPgDatabase(admin_url, role, keep=args.keep))
        for role in ("producer", "consumer")
    ]
    producer_db = Database(urls[0])
    stack.push_async_callback(producer_db.dispose)
    path = Pipeline(
        bus=bus,
        producer_db=producer_db,
        relay_batch=args.relay_batch,
        relay_linger_ms=args.relay_linger_ms,
    )
    if not args.keep:
        stack.push_async_callback(delete_topics, servers, [path.topic])
    await path.start()
    stack.push_async_callback(path.stop)
    spec = consumer_spec("pipeline", path, args, servers=servers, db_url=urls[1])
    await start_consumer(stack, path, spec, separate=args.processes == 2)
    path.writers = args.writers
    return path


async def open_adapter(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, servers: str
) -> Measured:
    bus = KafkaBus(servers, client_id=unique("bench"), partitions=args.partitions)
    await bus.start()
    stack.push_async_callback(bus.close)
    path = KafkaBusOnly(bus)
    if not args.keep:
        stack.push_async_callback(delete_topics, servers, [path.topic])
    await bus.ensure_topics([path.topic])
    spec = consumer_spec("adapter", path, args, servers=servers)
    await start_consumer(stack, path, spec, separate=args.processes == 2)
    path.writers = args.writers
    return path


async def open_raw(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, servers: str
) -> Measured:
    path = RawKafka(servers)
    if not args.keep:
        stack.push_async_callback(delete_topics, servers, [path.topic])
    await path.start(KafkaBus(servers, client_id=unique("bench"), partitions=args.partitions))
    stack.push_async_callback(path.stop)
    spec = consumer_spec("raw", path, args, servers=servers)
    await start_consumer(stack, path, spec, separate=args.processes == 2)
    path.writers = args.writers
    return path


# --- report ------------------------------------------------------------------------------------


def verdicts(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    local = results.get("local")
    if local:
        out.append(
            {
                "target": f"LocalBus throughput >= {TARGET_LOCAL_RATE:,.0f} events/s (burst)",
                "measured": local["burst"]["events_per_s"],
                "unit": "events/s",
                "pass": local["burst"]["events_per_s"] >= TARGET_LOCAL_RATE,
            }
        )
        paced_ = local["paced"]
        kept_up = not paced_["overloaded"] and (
            paced_["events_per_s"] >= 0.95 * paced_["offered_rate"]
        )
        out.append(
            {
                "target": f"LocalBus p99 <= {TARGET_LOCAL_P99_MS:.0f} ms at "
                f"{paced_['offered_rate']:,.0f} events/s offered",
                "measured": paced_["latency_ms"]["p99"],
                "unit": "ms",
                "pass": kept_up and paced_["latency_ms"]["p99"] <= TARGET_LOCAL_P99_MS,
            }
        )
    if results.get("adapter") and results.get("raw"):
        results["adapter_over_raw"] = (
            results["adapter"]["burst"]["events_per_s"] / results["raw"]["burst"]["events_per_s"]
        )
    if results.get("kafka") and results.get("raw"):
        ratio = results["kafka"]["burst"]["events_per_s"] / results["raw"]["burst"]["events_per_s"]
        results["kafka_over_raw"] = ratio
        results["kafka_over_raw_by_round"] = [
            k["events_per_s"] / r["events_per_s"]
            for k, r in zip(results["kafka"]["bursts"], results["raw"]["bursts"], strict=True)
        ]
        out.append(
            {
                "target": f"Kafka path >= {TARGET_KAFKA_RATIO:.0%} of raw aiokafka throughput",
                "measured": ratio,
                "unit": "ratio",
                "pass": ratio >= TARGET_KAFKA_RATIO,
            }
        )
    return out


LOADS = {"burst": "burst", "paced": "paced", "paced_sustainable": "paced at 80% of burst"}


def report(results: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    table = Table(title="Bus benchmark: end to end (write -> handler / -> consumer commit)")
    for column in (
        "path",
        "load",
        "events",
        "offered/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99 applied ms",
        "max ms",
        "py CPU (loop)",
        "broker / PG CPU",
        "box busy",
    ):
        table.add_column(column, justify="left" if column in ("path", "load") else "right")
    names = {
        "local": "LocalBus (SQLite)",
        "kafka": "Kafka path (PostgreSQL)",
        "adapter": "KafkaBus adapter, no DB",
        "raw": "raw aiokafka",
    }
    for key, name in names.items():
        for load in ("burst", "paced", "paced_sustainable"):
            r = results.get(key, {}).get(load)
            if not r:
                continue
            table.add_row(
                name,
                LOADS[load] + (" [red](overloaded)" if r.get("overloaded") else ""),
                f"{r['events']:,}",
                "max" if r["offered_rate"] is None else f"{r['offered_rate']:,.0f}",
                f"{r['events_per_s']:,.0f}",
                f"{r['latency_ms']['p50']:.1f}",
                f"{r['latency_ms']['p99']:.1f}",
                f"{r['latency_applied_ms']['p99']:.1f}",
                f"{r['latency_ms']['max']:.1f}",
                f"{r['process_cpu_cores']:.2f} ({r['loop_cpu_cores']:.2f})"
                + (
                    f" + {r['consumer_process_cpu_cores']:.2f}"
                    if "consumer_process_cpu_cores" in r
                    else ""
                ),
                f"{r.get('broker_cpu_cores', float('nan')):.2f} / "
                f"{r.get('postgres_cpu_cores', float('nan')):.2f}",
                f"{r['machine_busy']:.0%}",
            )
    console.print(table)
    rounds = {key: results[key]["bursts"] for key in names if key in results}
    if any(len(bursts) > 1 for bursts in rounds.values()):
        console.print("burst rounds (events/s; a path's row above is its median round):")
        for key, bursts in rounds.items():
            console.print(
                f"  {names[key]}: " + ", ".join(f"{b['events_per_s']:,.0f}" for b in bursts)
            )
    if "kafka_over_raw" in results:
        console.print(
            f"kafka_path / raw_aiokafka throughput = [bold]{results['kafka_over_raw']:.2f}[/bold]"
            " (medians; round by round: "
            + ", ".join(f"{r:.2f}" for r in results["kafka_over_raw_by_round"])
            + ")"
        )
    if "adapter_over_raw" in results:
        console.print(
            "KafkaBus adapter alone (publish/poll/commit, no outbox, inbox or database) / raw"
            f" aiokafka = {results['adapter_over_raw']:.2f} (diagnostic: the bus layer's own cost)"
        )
    verdict = Table(title="Targets")
    verdict.add_column("target")
    verdict.add_column("measured", justify="right")
    verdict.add_column("result")
    for t in targets:
        measured = (
            f"{t['measured']:.2f}" if t["unit"] == "ratio" else f"{t['measured']:,.1f} {t['unit']}"
        )
        verdict.add_row(
            t["target"], measured, "[green]PASS[/green]" if t["pass"] else "[red]MISS[/red]"
        )
    console.print(verdict)


async def main(args: argparse.Namespace) -> int:
    configure_logging(level="warning", json=False)
    tune_collector(args.gc_threshold)
    results: dict[str, Any] = {}
    paths = args.only or ["local", "kafka", "adapter", "raw"]
    servers = admin_url = ""
    if "kafka" in paths or "adapter" in paths or "raw" in paths:
        servers = kafka_bootstrap_servers()
    if "kafka" in paths:
        admin_url = postgres_admin_url()
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        runner = Runner(
            args,
            progress,
            broker=listener_pid(servers) if servers else None,
            postmaster=await postmaster_pid(admin_url) if admin_url else None,
        )
        async with contextlib.AsyncExitStack() as stack:
            opened: dict[str, Entry] = {}
            if "local" in paths:
                workdir = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="handoff-bench-", dir=args.workdir)
                )
                local = await open_local(stack, args, Path(workdir))
                opened["local"] = ("LocalBus", local, True)
            if "kafka" in paths:
                kafka = await open_kafka(stack, args, servers, admin_url)
                opened["kafka"] = ("Kafka path", kafka, False)
            if "adapter" in paths:
                opened["adapter"] = (
                    "KafkaBus adapter",
                    await open_adapter(stack, args, servers),
                    False,
                )
            if "raw" in paths:
                opened["raw"] = ("raw aiokafka", await open_raw(stack, args, servers), False)
            results.update(await runner.measure(opened))
    targets = verdicts(results, args)
    report(results, targets)
    saved = write_results(
        "bus",
        {
            "benchmark": "bus",
            "config": vars(args),
            "machine": machine(),
            "wall_s": time.perf_counter() - started,
            "results": results,
            "targets": targets,
        },
    )
    console.print(f"results: {saved}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--events",
        type=at_least(1),
        default=20000,
        help="events in each burst (default 20000)",
    )
    p.add_argument(
        "--warmup", type=at_least(0), default=1000, help="warm-up events per path (0: none)"
    )
    p.add_argument(
        "--rounds",
        type=at_least(1),
        default=3,
        help="bursts per path, the paths taking turns; a path's figure is its median round",
    )
    p.add_argument(
        "--rate",
        type=above_zero,
        default=TARGET_LOCAL_RATE,
        help="offered load of the paced phase, events/s (default 5000)",
    )
    p.add_argument(
        "--paced-seconds",
        type=above_zero,
        default=5.0,
        help="length of the paced phase at its rate (default 5)",
    )
    p.add_argument(
        "--txn-size",
        type=at_least(1),
        default=100,
        help="events per producer transaction (paced: at most this many)",
    )
    p.add_argument(
        "--writers",
        type=at_least(1),
        default=4,
        help="Kafka rows, burst: producer transactions in flight at once (a service's\n"
        "concurrent requests; default 4). LocalBus and paced phases use one writer",
    )
    p.add_argument(
        "--relay-batch",
        type=at_least(1),
        default=_SERVICE_DEFAULTS["outbox_batch_size"].default,
        help="OutboxRelay batch_size (default: the services' HANDOFF_OUTBOX_BATCH_SIZE default)",
    )
    p.add_argument(
        "--relay-linger-ms",
        type=at_least(0),
        default=_SERVICE_DEFAULTS["outbox_linger_ms"].default,
        help="OutboxRelay linger (default: the services' HANDOFF_OUTBOX_LINGER_MS default)",
    )
    p.add_argument(
        "--consumer-batch",
        type=at_least(1),
        default=_SERVICE_DEFAULTS["consumer_batch_size"].default,
        help="EventConsumer batch_size, and the raw consumer's records per poll (default: the\n"
        "services' HANDOFF_CONSUMER_BATCH_SIZE default)",
    )
    p.add_argument("--partitions", type=at_least(1), default=6)
    p.add_argument(
        "--processes",
        type=int,
        choices=[1, 2],
        default=2,
        help="Kafka paths (pipeline, adapter, raw): 2 = the consumer side in a process of its\n"
        "own, as deployed (default); 1 = everything on one event loop. LocalBus is always 1",
    )
    p.add_argument(
        "--handler",
        choices=["execute", "prebuilt", "staged"],
        default="staged",
        help="how the consumer's handler writes its row per event: staged with the batch's\n"
        "commit (HandlerContext.stage, the default, as services write effects), one INSERT\n"
        "statement per event, or a prebuilt INSERT with parameters",
    )
    p.add_argument("--phase-timeout", type=above_zero, default=90.0, help="seconds per phase")
    p.add_argument(
        "--settle",
        type=zero_or_more,
        default=0.15,
        help="before each burst, wait (at most 5 s) until the machine is busy under this\n"
        "fraction of its cores over 200 ms (default 0.15; 0: start at once), so that what\n"
        "the burst before left to do (checkpoints, vacuum, the broker's flushes) is not\n"
        "measured as this one's",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=["local", "kafka", "adapter", "raw"],
        help="run only these paths (repeatable)",
    )
    p.add_argument(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gc.freeze() after each warm-up: startup objects leave the collector's view, so\n"
        "full (gen-2) collections stop pausing the loop for ~30 ms",
    )
    add_gc_threshold(p, "of every process of every path, raw aiokafka's included")
    p.add_argument("--workdir", default=None, help="where the SQLite files go (default: tmp)")
    p.add_argument(
        "--keep", action="store_true", help="keep the run's Kafka topics and PostgreSQL databases"
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    # `handoff bench bus` passes no arguments: BENCH_ARGS="--events 5000 ..." stands in for them
    argv = sys.argv[1:] or shlex.split(os.environ.get("BENCH_ARGS", ""))
    sys.exit(run_on_service_loop(main(parse_args(argv))))
