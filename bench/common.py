"""Shared pieces of the benchmarks: infrastructure, a tiny service schema, pacing, statistics."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Column, Integer, String, Table
from sqlalchemy.engine import URL, make_url

from shared.db import Database, new_metadata
from shared.events.catalog import CATALOG, EventCatalog, EventType
from shared.events.payloads import Payload
from shared.inbox import define_inbox_table
from shared.outbox_tables import define_outbox_tables
from shared.settings.base import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEPLOY_LOCAL = ROOT / "deploy" / "local"

# --- a tiny service schema: outbox + inbox + one effect table ---------------------------

metadata = new_metadata()
outbox_tables = define_outbox_tables(metadata)
inbox_table = define_inbox_table(metadata)
effects = Table(
    "bench_effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("lead_id", String(36), nullable=False),
    Column("n", Integer, nullable=False),
)

PAD = "x" * 160  # brings the payload to the size of a typical lead event (~250 B of JSON)


class BenchPing(Payload):
    """The benchmark's event: the n-th ping of a lead, with the clocks that time it.

    `t_sched` is when the event was due (the paced schedule; equal to `t_add` in a burst),
    `t_add` when `Outbox.add` was called; both are `time.perf_counter_ns()` values, which on
    Linux are CLOCK_MONOTONIC and so comparable between processes of one machine.
    """

    n: int
    t_sched: int
    t_add: int
    pad: str = ""


def catalog_with_bench_ping(topic: str) -> EventCatalog:
    bench_ping = EventType(
        name="handoff.bench.ping.v1",
        model=BenchPing,
        topic=topic,
        summary="Benchmark event.",
        producer="bench-producer",
    )
    return CATALOG.extended(bench_ping)


async def create_schema(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


def add_gc_threshold(parser: argparse.ArgumentParser, whose: str) -> None:
    """`--gc-threshold`: the young-generation threshold `whose`, as the services run it
    (`HANDOFF_GC_THRESHOLD`) unless told otherwise."""
    parser.add_argument(
        "--gc-threshold",
        type=at_least(0),
        default=ServiceSettings.model_fields["gc_threshold"].default,
        help=f"young-generation GC threshold {whose} (default: the services'\n"
        "HANDOFF_GC_THRESHOLD default; 0: Python's 700)",
    )


def at_least(low: int) -> Callable[[str], int]:
    """An argparse `type`: a whole number no smaller than `low`, or a usage error saying so
    (`--events 0` would otherwise wait for events that never come)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def above_zero(text: str) -> float:
    """An argparse `type`: a number of seconds (or a rate) greater than zero."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def zero_or_more(text: str) -> float:
    """An argparse `type`: a number of seconds, 0 included."""
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- infrastructure -------------------------------------------------------------------


def _start_local(script: str, variable: str) -> str:
    """Start deploy/local/<script> (idempotent) and return the value it prints."""
    result = subprocess.run(
        ["bash", str(DEPLOY_LOCAL / script), "start"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(
            f"deploy/local/{script} start failed (exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    for line in result.stdout.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name == variable:
            return value.strip("'\"")
    sys.exit(f"deploy/local/{script} printed no {variable}: {result.stdout!r}")


def kafka_bootstrap_servers() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _start_local(
        "kafka.sh", "KAFKA_BOOTSTRAP_SERVERS"
    )


def postgres_admin_url() -> str:
    return os.environ.get("DATABASE_URL") or _start_local("postgres.sh", "DATABASE_URL")


async def pg_connect(url: URL | str) -> asyncpg.Connection:
    """A plain asyncpg connection to the database a SQLAlchemy URL names."""
    url = make_url(url)
    return await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.host,
        port=url.port,
        database=url.database,
    )


class FreshPgDatabase:
    """A brand-new PostgreSQL database with a random name, dropped on exit."""

    def __init__(self, admin_url: str, prefix: str, *, keep: bool = False) -> None:
        self.admin = make_url(admin_url)
        self.keep = keep
        self.name = f"bench_{prefix}_{uuid.uuid4().hex[:10]}"

    async def _exec(self, sql: str) -> None:
        conn = await pg_connect(self.admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def __aenter__(self) -> str:
        await self._exec(f'CREATE DATABASE "{self.name}"')
        return self.admin.set(database=self.name).render_as_string(hide_password=False)

    async def __aexit__(self, *exc: object) -> None:
        if not self.keep:
            await self._exec(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- load generation ------------------------------------------------------------------

WriteBatch = Callable[[Sequence[tuple[int, int]]], Awaitable[None]]
"""Writes events [(n, t_sched_ns), ...] (a transaction, or sends to a producer)."""


async def burst(
    first: int,
    count: int,
    batch: int,
    write: WriteBatch,
    on_progress: Callable[[int], None] | None = None,
    *,
    writers: int = 1,
) -> None:
    """Offer `count` events as fast as `write` takes them, `batch` per call.

    `writers` > 1: that many calls in flight at once (a service's concurrent requests, each
    its own transaction); batch k goes to writer k mod `writers`, so each writer's events
    stay in order and, with events round-robin over the leads, concurrent batches share no
    lead as long as `writers * batch` <= the number of leads.
    """
    starts = list(range(first, first + count, batch))

    async def writer(mine: Sequence[int]) -> None:
        for start in mine:
            stop = min(start + batch, first + count)
            now = time.perf_counter_ns()
            await write([(n, now) for n in range(start, stop)])
            if on_progress:
                on_progress(stop - start)

    await asyncio.gather(*(writer(starts[w::writers]) for w in range(max(1, writers))))


async def paced(
    first: int,
    count: int,
    rate: float,
    max_batch: int,
    write: WriteBatch,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Offer `count` events on a fixed schedule of `rate` events/s (open loop).

    Event k is due at t0 + k/rate. Whatever is due when the previous write returns goes out
    in the next write (at most `max_batch`), stamped with its *due* time, so a writer that
    falls behind shows up as latency (no coordinated omission) rather than a slower schedule.
    """
    interval = 1e9 / rate
    t0 = time.perf_counter_ns()
    sent = 0
    while sent < count:
        now = time.perf_counter_ns()
        due = min(count, int((now - t0) / interval) + 1)
        if due <= sent:
            await asyncio.sleep((t0 + sent * interval - now) / 1e9)
            continue
        stop = min(due, sent + max_batch)
        await write([(first + k, int(t0 + k * interval)) for k in range(sent, stop)])
        if on_progress:
            on_progress(stop - sent)
        sent = stop


# --- measurements ---------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class Samples:
    """Per-event timestamps (ns) of one measured phase."""

    t_sched: list[int] = field(default_factory=list)
    t_add: list[int] = field(default_factory=list)
    t_handled: list[int] = field(default_factory=list)
    t_applied: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t_applied)


def summarize(
    samples: Samples, *, t_start: int, t_end: int, offered_rate: float | None, expected: int
) -> dict[str, Any]:
    """Throughput (first write -> last event applied) and latency percentiles in ms."""

    def dist(ends: list[int], starts: list[int]) -> dict[str, float]:
        values = sorted((e - s) / 1e6 for e, s in zip(ends, starts, strict=True))
        return {
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "p99": percentile(values, 99),
            "max": values[-1] if values else float("nan"),
        }

    elapsed = (t_end - t_start) / 1e9
    return {
        "events": len(samples),
        "expected": expected,
        "elapsed_s": elapsed,
        "events_per_s": len(samples) / elapsed if elapsed > 0 else float("nan"),
        "offered_rate": offered_rate,
        # the brief's latency: due (== outbox add in a burst) -> handler runs
        "latency_ms": dist(samples.t_handled, samples.t_sched),
        # until the consumer's transaction (inbox + effect) committed
        "latency_applied_ms": dist(samples.t_applied, samples.t_sched),
        # from the actual Outbox.add call (leaves out time spent behind schedule)
        "latency_from_add_ms": dist(samples.t_handled, samples.t_add),
    }


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def write_results(name: str, results: dict[str, Any], *, stamp: str | None = None) -> Path:
    """Save a run as bench/results/<name>-<stamp>.json (stamp: now, unless given)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{stamp or time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


# --- CPU accounting from /proc (shared by the benchmarks) ---------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process, seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s(postmaster: int | None) -> float:
    """CPU of one PostgreSQL cluster: its postmaster and every child of it (backends, WAL
    writer, checkpointer); other clusters on the box are left out."""
    if postmaster is None:
        return 0.0
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def listener_pid(address: str) -> int | None:
    """The process on this machine listening on `address`'s TCP port (`host:port`, the first
    of a list): a locally run Kafka broker, say. None if it is elsewhere or not visible."""
    port = int(address.split(",")[0].rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                return int(entry)
        except OSError:
            continue
    return None


async def postmaster_pid(database_url: str) -> int | None:
    """The PostgreSQL server's postmaster (the parent of our backend), if it runs here."""
    conn = await pg_connect(make_url(database_url))
    try:  # while the backend lives: its parent is the postmaster
        return _parent_pid(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None  # not on this machine


def system_busy() -> tuple[int, int]:
    """Busy and total jiffies of the whole machine since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def settle(*, below: float, window_s: float = 0.2, limit_s: float = 5.0) -> float:
    """Wait until the machine is quiet: busy under `below` (0-1, all cores) over a whole
    `window_s`, or `limit_s` has passed. What a phase leaves behind (a database's
    checkpoint and vacuum, the broker's flushes and collections) then lands on no other
    phase's measurement. Returns the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        busy0, total0 = system_busy()
        await asyncio.sleep(window_s)
        busy1, total1 = system_busy()
        if (busy1 - busy0) / max(1, total1 - total0) < below:
            break
    return time.perf_counter() - started
