"""Bus benchmark: outbox -> relay -> bus -> inbox consumer, on LocalBus and on Kafka, against
raw aiokafka on the same broker. See bench/README.md for the method.

    PYTHONPATH=. .venv/bin/python bench/bus.py [--events N] [--rate R] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `handoff bench` runs us by path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import insert

from bench.common import (
    PAD,
    BenchPing,
    FreshPgDatabase,
    Samples,
    burst,
    catalog_with_bench_ping,
    create_schema,
    effects,
    inbox_table,
    kafka_bootstrap_servers,
    machine,
    outbox_tables,
    paced,
    postgres_admin_url,
    summarize,
    system_busy,
    unique,
    write_results,
)
from shared.bus.kafka import KafkaBus
from shared.bus.local import LocalBus
from shared.bus.port import Bus, OutgoingMessage, Record
from shared.consumer import ConsumerHooks, EventConsumer, HandlerContext
from shared.db import Database
from shared.events.codec import build_envelope, to_binary
from shared.inbox import Inbox
from shared.observability.logging import configure_logging
from shared.outbox import Outbox, OutboxRelay

console = Console(width=None if sys.stdout.isatty() else 160)
LEADS = 1000  # distinct subjects (keys); events go round-robin over them
TARGET_LOCAL_RATE = 5000.0
TARGET_LOCAL_P99_MS = 50.0
TARGET_KAFKA_RATIO = 0.5


class Cpu:
    """CPU used by this process (all threads), by its event loop (the main thread; the rest
    is driver threads: aiosqlite, asyncpg has none) and by the whole machine over a phase."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.loop0 = time.thread_time()
        self.proc0 = self._proc()
        self.sys0 = system_busy()

    @staticmethod
    def _proc() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def result(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        busy1, total1 = system_busy()
        busy0, total0 = self.sys0
        return {
            "process_cpu_cores": (self._proc() - self.proc0) / wall,  # 1.0 = one core busy
            "loop_cpu_cores": (time.thread_time() - self.loop0) / wall,
            "machine_busy": (busy1 - busy0) / max(1, total1 - total0),  # 1.0 = all cores busy
        }


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


def _record(samples: Samples, pending: list[tuple[int, int, int]]) -> None:
    now = time.perf_counter_ns()
    for t_sched, t_add, t_handled in pending:
        samples.t_sched.append(t_sched)
        samples.t_add.append(t_add)
        samples.t_handled.append(t_handled)
        samples.t_applied.append(now)


class Measured:
    """Collects per-event timestamps; `expect` arms the phase's completion event."""

    def __init__(self) -> None:
        self.samples = Samples()
        self._pending: list[tuple[int, int, int]] = []
        self._target = 0
        self._done = asyncio.Event()
        self._on_applied: Callable[[int], None] = lambda _n: None

    async def write(self, batch: Sequence[tuple[int, int]]) -> None:
        """Offer these events [(n, t_sched_ns), ...] to the path."""
        raise NotImplementedError

    def expect(self, count: int, on_applied: Callable[[int], None]) -> asyncio.Event:
        self.samples = Samples()
        self._target = count
        self._on_applied = on_applied
        self._done.clear()
        return self._done

    def _applied(self) -> None:
        _record(self.samples, self._pending)
        self._on_applied(len(self._pending))
        self._pending.clear()
        if len(self.samples) >= self._target:
            self._done.set()


# --- the handoff pipeline (outbox -> relay -> bus -> EventConsumer + inbox) -----------------


class Pipeline(Measured):
    def __init__(
        self,
        *,
        bus: Bus,
        producer_db: Database,
        consumer_db: Database,
        relay_batch: int,
        consumer_batch: int,
        handler: str = "execute",
    ) -> None:
        super().__init__()
        self.handler = handler
        self.producer_db = producer_db
        self.consumer_db = consumer_db
        self.bus = bus
        catalog = catalog_with_bench_ping(unique("bench.bus"))
        self.outbox = Outbox(service="bench-producer", tables=outbox_tables, catalog=catalog)
        self.relay = OutboxRelay(
            db=producer_db, outbox=self.outbox, bus=bus, batch_size=relay_batch
        )
        self.consumer = EventConsumer(
            service="bench-consumer",
            group=unique("bench"),
            bus=bus,
            db=consumer_db,
            inbox=Inbox(inbox_table),
            catalog=catalog,
            handlers={BenchPing: [self._handle]},
            batch_size=consumer_batch,
            hooks=ConsumerHooks(after_db_commit=self._committed),
        )
        self.leads = [uuid.uuid4() for _ in range(LEADS)]
        self.subjects = [str(lead) for lead in self.leads]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await create_schema(self.producer_db)
        await create_schema(self.consumer_db)
        await self.bus.ensure_topics(self.consumer.topics)
        self._tasks = [
            asyncio.create_task(self.relay.run()),
            asyncio.create_task(self.consumer.run()),
        ]

    async def stop(self) -> None:
        self.relay.stop()
        self.consumer.stop()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout=60)

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

    async def _handle(self, ctx: HandlerContext, payload: BenchPing) -> None:
        """The consumer's effect: one row per event, written as `--handler` says."""
        self._pending.append((payload.t_sched, payload.t_add, time.perf_counter_ns()))
        row = {"event_id": str(ctx.envelope.id), "lead_id": str(payload.lead_id), "n": payload.n}
        if self.handler == "execute":  # the obvious handler: one INSERT statement per event
            await ctx.session.execute(insert(effects).values(**row))
        elif self.handler == "prebuilt":  # the statement built once, parameters per event
            await ctx.session.execute(INSERT_EFFECT, row)
        else:  # "staged": HandlerContext.stage, one executemany as the batch commits
            ctx.stage(effects, **row)

    async def _committed(self, records: Sequence[Record]) -> None:
        self._applied()


# --- the baseline: raw aiokafka --------------------------------------------------------------


class KafkaBusOnly(Measured):
    """The KafkaBus adapter alone, no database: `bus.publish` per batch (as the relay calls
    it) and a subscription polling and committing per batch (as EventConsumer does)."""

    def __init__(self, bus: KafkaBus, *, consumer_batch: int) -> None:
        super().__init__()
        self.bus = bus
        self.topic = unique("bench.adapter")
        self.consumer_batch = consumer_batch
        self.messages = WireMessages()
        self.subscription = bus.subscribe(group=unique("bench-adapter"), topics=[self.topic])
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

    async def write(self, batch: Sequence[tuple[int, int]]) -> None:
        out = []
        for n, t_sched in batch:
            key, headers, value = self.messages.make(n, t_sched)
            out.append(OutgoingMessage(topic=self.topic, key=key, value=value, headers=headers))
        await self.bus.publish(out)

    async def _consume(self) -> None:
        while not self._stopping:
            records = await self.subscription.poll(max_records=self.consumer_batch, timeout=0.5)
            if not records:
                continue
            now = time.perf_counter_ns()
            for r in records:
                self._pending.append((*_stamps(r.value), now))
            await self.subscription.commit(records)
            self._applied()


class RawKafka(Measured):
    """AIOKafkaProducer (acks=all, idempotent, KafkaBus's settings) and one AIOKafkaConsumer
    group member committing after every batch; messages shaped like the pipeline's."""

    def __init__(self, servers: str, *, consumer_batch: int) -> None:
        super().__init__()
        self.servers = servers
        self.topic = unique("bench.raw")
        self.consumer_batch = consumer_batch
        self.producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            client_id=unique("bench-raw"),
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=30_000,
        )
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=servers,
            group_id=unique("bench-raw"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2500,
            fetch_max_wait_ms=100,
        )
        self.messages = WireMessages()
        self._sends: list[asyncio.Future[Any]] = []
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self, bus_for_topics: KafkaBus) -> None:
        await bus_for_topics.ensure_topics([self.topic])  # same partitions as the pipeline's
        await self.producer.start()
        await self.consumer.start()
        self._task = asyncio.create_task(self._consume())

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            await asyncio.wait_for(self._task, timeout=30)
        await self.consumer.stop()
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

    async def _consume(self) -> None:
        while not self._stopping:
            batches = await self.consumer.getmany(timeout_ms=500, max_records=self.consumer_batch)
            if not batches:
                continue
            now = time.perf_counter_ns()
            for messages in batches.values():
                for m in messages:
                    self._pending.append((*_stamps(m.value), now))
            await self.consumer.commit()
            self._applied()


# --- phases ------------------------------------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace, progress: Progress) -> None:
        self.args = args
        self.progress = progress
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
        cpu = Cpu()
        t_start = time.perf_counter_ns()
        if rate is None:
            producing = burst(first, count, batch, path.write)
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

    async def measure(self, name: str, path: Measured, *, fixed_rate: bool) -> dict[str, Any]:
        """Warm-up, burst, then paced; `fixed_rate`: pace at --rate even above the burst's
        throughput (the LocalBus latency target is defined at that rate)."""
        args = self.args
        out: dict[str, Any] = {}
        await self.phase(
            f"{name}: warm-up", path, count=args.warmup, rate=None, batch=args.txn_size, timeout=120
        )
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        out["burst"] = await self.phase(
            f"{name}: burst",
            path,
            count=args.events,
            rate=None,
            batch=args.txn_size,
            timeout=args.phase_timeout,
        )
        capacity = out["burst"]["events_per_s"]
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


# --- the paths ----------------------------------------------------------------------------------


async def run_local(runner: Runner, workdir: Path) -> dict[str, Any]:
    args = runner.args
    async with contextlib.AsyncExitStack() as stack:
        bus = LocalBus(workdir / "events.db", partitions=args.partitions)
        await bus.start()
        stack.push_async_callback(bus.close)
        dbs = [
            Database(f"sqlite+aiosqlite:///{workdir / name}.db")
            for name in ("producer", "consumer")
        ]
        for db in dbs:
            stack.push_async_callback(db.dispose)
        path = Pipeline(
            bus=bus,
            producer_db=dbs[0],
            consumer_db=dbs[1],
            relay_batch=args.relay_batch,
            consumer_batch=args.consumer_batch,
            handler=args.handler,
        )
        await path.start()
        stack.push_async_callback(path.stop)
        return await runner.measure("LocalBus", path, fixed_rate=True)
    raise AssertionError("unreachable")


async def delete_topics(servers: str, topics: Sequence[str]) -> None:
    """Drop the run's topics (they keep their whole history otherwise); best effort."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id=unique("bench-admin"))
    try:
        await admin.start()
        await admin.delete_topics(list(topics))
    except Exception as exc:  # cleanup must not hide the results
        console.print(f"[yellow]could not delete topics {list(topics)}: {exc}")
    finally:
        await admin.close()


async def run_kafka(runner: Runner, servers: str, admin_url: str) -> dict[str, Any]:
    args = runner.args
    async with contextlib.AsyncExitStack() as stack:
        bus = KafkaBus(servers, client_id=unique("bench"), partitions=args.partitions)
        await bus.start()
        stack.push_async_callback(bus.close)
        dbs = []
        for role in ("producer", "consumer"):
            url = await stack.enter_async_context(FreshPgDatabase(admin_url, role, keep=args.keep))
            dbs.append(Database(url))
            stack.push_async_callback(dbs[-1].dispose)
        path = Pipeline(
            bus=bus,
            producer_db=dbs[0],
            consumer_db=dbs[1],
            relay_batch=args.relay_batch,
            consumer_batch=args.consumer_batch,
            handler=args.handler,
        )
        if not args.keep:
            stack.push_async_callback(delete_topics, servers, path.consumer.topics)
        await path.start()
        stack.push_async_callback(path.stop)
        return await runner.measure("Kafka path", path, fixed_rate=False)
    raise AssertionError("unreachable")


async def run_adapter(runner: Runner, servers: str) -> dict[str, Any]:
    args = runner.args
    bus = KafkaBus(servers, client_id=unique("bench"), partitions=args.partitions)
    await bus.start()
    adapter = KafkaBusOnly(bus, consumer_batch=args.consumer_batch)
    try:
        await adapter.start()
        return await runner.measure("KafkaBus adapter", adapter, fixed_rate=False)
    finally:
        await adapter.stop()
        await bus.close()
        if not args.keep:
            await delete_topics(servers, [adapter.topic])


async def run_raw(runner: Runner, servers: str) -> dict[str, Any]:
    admin_bus = KafkaBus(servers, client_id=unique("bench"), partitions=runner.args.partitions)
    raw = RawKafka(servers, consumer_batch=runner.args.consumer_batch)
    try:
        await raw.start(admin_bus)
        return await runner.measure("raw aiokafka", raw, fixed_rate=False)
    finally:
        await raw.stop()
        if not runner.args.keep:
            await delete_topics(servers, [raw.topic])


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
                f"{r['process_cpu_cores']:.2f} ({r['loop_cpu_cores']:.2f})",
                f"{r['machine_busy']:.0%}",
            )
    console.print(table)
    if "kafka_over_raw" in results:
        console.print(
            f"kafka_path / raw_aiokafka throughput = [bold]{results['kafka_over_raw']:.2f}[/bold]"
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
        runner = Runner(args, progress)
        if "local" in paths:
            with tempfile.TemporaryDirectory(prefix="handoff-bench-", dir=args.workdir) as tmp:
                results["local"] = await run_local(runner, Path(tmp))
        if "kafka" in paths:
            results["kafka"] = await run_kafka(runner, servers, admin_url)
        if "adapter" in paths:
            results["adapter"] = await run_adapter(runner, servers)
        if "raw" in paths:
            results["raw"] = await run_raw(runner, servers)
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
        type=int,
        default=20000,
        help="events in each burst (default 20000)",
    )
    p.add_argument("--warmup", type=int, default=1000, help="warm-up events per path")
    p.add_argument(
        "--rate",
        type=float,
        default=TARGET_LOCAL_RATE,
        help="offered load of the paced phase, events/s (default 5000)",
    )
    p.add_argument(
        "--paced-seconds",
        type=float,
        default=5.0,
        help="length of the paced phase at its rate (default 5)",
    )
    p.add_argument(
        "--txn-size",
        type=int,
        default=100,
        help="events per producer transaction (paced: at most this many)",
    )
    p.add_argument("--relay-batch", type=int, default=500, help="OutboxRelay batch_size")
    p.add_argument("--consumer-batch", type=int, default=500, help="EventConsumer batch_size")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument(
        "--handler",
        choices=["execute", "prebuilt", "staged"],
        default="staged",
        help="how the consumer's handler writes its row per event: staged with the batch's\n"
        "commit (HandlerContext.stage, the default, as services write effects), one INSERT\n"
        "statement per event, or a prebuilt INSERT with parameters",
    )
    p.add_argument("--phase-timeout", type=float, default=90.0, help="seconds per phase")
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
    p.add_argument("--workdir", default=None, help="where the SQLite files go (default: tmp)")
    p.add_argument(
        "--keep", action="store_true", help="keep the run's Kafka topics and PostgreSQL databases"
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    # `handoff bench bus` passes no arguments: BENCH_ARGS="--events 5000 ..." stands in for them
    argv = sys.argv[1:] or shlex.split(os.environ.get("BENCH_ARGS", ""))
    sys.exit(asyncio.run(main(parse_args(argv))))
