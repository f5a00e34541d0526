"""What a unit of work costs whatever its size, and what each event or lead adds to it.

Two of handoff's units of work, each timed alone (one process, nothing else running in
it), on SQLite and on PostgreSQL:

- **relay**: `OutboxRelay.relay_once` moving K committed events from the outbox to a
  `LocalBus` log (claim, publish, commit);
- **capture**: intake's `capture_batch` creating K new leads (lookups, account, leads,
  `lead.captured` in the outbox, commit), as a webhook batch or an import batch does;
- **produce**: a producer's transaction adding K events about leads seen before
  (`Outbox.add`, the flush with each lead's sequence, commit), as `bus.py`'s writers do;
- **consume**: `EventConsumer.process` applying K records as a Kafka subscription hands
  them over (decoding, the inbox, a handler staging one row per event, commit), as
  `bus.py`'s consumer does.

For each it reports the process's CPU time per unit at several K, and the two numbers a
line through them gives: the fixed cost of a unit and the cost of one more event (lead).
The fixed cost is what batching saves; on PostgreSQL it includes the client's side of the
round trips. This is a diagnostic (no target): it explains `intake.py`'s and `bus.py`'s
figures, it does not replace them.

    PYTHONPATH=. .venv/bin/python bench/costs.py [--units 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import (
    PAD,
    BenchPing,
    FreshPgDatabase,
    add_gc_threshold,
    at_least,
    catalog_with_bench_ping,
    create_schema,
    effects,
    inbox_table,
    machine,
    outbox_tables,
    postgres_admin_url,
    postgres_cpu_s,
    postmaster_pid,
    write_results,
)
from services.intake.app import definition as intake_definition
from services.intake.canonical import LeadIn
from services.intake.leads import capture_batch
from services.intake.models import outbox_tables as intake_outbox_tables
from shared.bus.local import LocalBus
from shared.bus.port import Record
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events.catalog import CATALOG
from shared.events.codec import OutboxHeaders
from shared.handler_context import HandlerContext
from shared.inbox import Inbox
from shared.migrations import upgrade
from shared.outbox import Outbox
from shared.outbox_relay import CLAIMED, OutboxRelay, outbox_messages
from shared.process import run_on_service_loop, settle_for_serving

RELAY_SIZES = (1, 32, 500)
CAPTURE_SIZES = (1, 32, 500)
PRODUCE_SIZES = (1, 100)
CONSUME_SIZES = (1, 500)
ALL_SIZES = sorted(set(RELAY_SIZES) | set(CAPTURE_SIZES) | set(PRODUCE_SIZES) | set(CONSUME_SIZES))
LEADS = 1000
WARMUP = 20


POSTMASTER: list[int | None] = [None]  # the local PostgreSQL server's, when it runs here
Cost = tuple[float, float]  # CPU seconds per unit: this process's, the PostgreSQL server's


async def _timed(
    units: int, prepare: Callable[[], Awaitable[Any]], unit: Callable[[Any], Awaitable[None]]
) -> Cost:
    """Mean CPU seconds of `unit` (after `prepare`, untimed), warm-up excluded: this
    process's, and the PostgreSQL server's (all its processes; 0 on SQLite, or when the
    server runs elsewhere). /proc counts the server's in 10 ms ticks: over hundreds of
    units the rounding evens out, for units of a few events it is too coarse to read."""
    cpu = server = 0.0
    for n in range(units + WARMUP):
        prepared = await prepare()
        server0 = postgres_cpu_s(POSTMASTER[0])  # (reading /proc costs ~1 ms: not timed)
        start = time.process_time()
        await unit(prepared)
        if n >= WARMUP:
            cpu += time.process_time() - start
            server += postgres_cpu_s(POSTMASTER[0]) - server0
    return cpu / units, server / units


async def relay_costs(url: str, sizes: Sequence[int], units: int) -> dict[int, Cost]:
    """CPU per `relay_once` that finds K events waiting, for each K."""
    db = Database(url)
    await create_schema(db)
    bus = LocalBus(Path(tempfile.mkdtemp(prefix="handoff-costs-")) / "bus.db")
    await bus.start()
    outbox = Outbox(
        service="costs", tables=outbox_tables, catalog=catalog_with_bench_ping("t.costs")
    )
    relay = OutboxRelay(db=db, outbox=outbox, bus=bus, batch_size=max(sizes))
    leads = [uuid.uuid4() for _ in range(1000)]
    written = 0
    out: dict[int, Cost] = {}
    try:
        for k in sizes:

            async def prepare(k: int = k) -> None:
                nonlocal written
                async with db.transaction() as session:
                    for _ in range(k):
                        lead = leads[written % len(leads)]
                        ping = BenchPing(lead_id=lead, n=written, t_sched=0, t_add=0, pad="x" * 160)
                        await outbox.add(session, ping, subject=str(lead))
                        written += 1

            async def unit(_: None, k: int = k) -> None:
                moved = await relay.relay_once()
                assert moved == k, (moved, k)

            out[k] = await _timed(units, prepare, unit)
    finally:
        await bus.close()
        await db.dispose()
    return out


async def capture_costs(url: str, sizes: Sequence[int], units: int) -> dict[int, Cost]:
    """CPU per `capture_batch` unit of work creating K new leads, for each K (intake's
    schema, migrated; 500 company domains, so most accounts exist after a while)."""
    await upgrade(intake_definition().migrations, url)
    db = Database(url)
    outbox = Outbox(service="intake", tables=intake_outbox_tables, catalog=CATALOG)
    made = 0
    out: dict[int, Cost] = {}
    try:
        for k in sizes:
            runs = max(5, units * 32 // max(k, 32))  # big batches: fewer of them

            async def prepare(k: int = k) -> list[LeadIn]:
                nonlocal made
                items = []
                for _ in range(k):
                    made += 1
                    email = f"lead{made}.{uuid.uuid4().hex[:6]}@company{made % 500}.com"
                    items.append(LeadIn(email=email, first_name="Ann", source="marketing"))
                return items

            async def unit(items: list[LeadIn]) -> None:
                async def work(session: Any) -> None:
                    await capture_batch(session, outbox, items, sales_owned=frozenset())

                await db.run(work)

            out[k] = await _timed(runs, prepare, unit)
    finally:
        await db.dispose()
    return out


async def produce_costs(url: str, sizes: Sequence[int], units: int) -> dict[int, Cost]:
    """CPU per producer transaction of K events about leads seen before, for each K (the
    outbox is emptied between units, untimed, as a relay would)."""
    db = Database(url)
    await create_schema(db)
    outbox = Outbox(
        service="costs", tables=outbox_tables, catalog=catalog_with_bench_ping("t.costs")
    )
    leads = [uuid.uuid4() for _ in range(LEADS)]
    subjects = [str(lead) for lead in leads]
    written = 0
    out: dict[int, Cost] = {}
    try:
        for k in sizes:

            async def prepare() -> None:
                async with db.transaction() as session:
                    await session.execute(outbox.table.delete())

            async def unit(_: None, k: int = k) -> None:
                nonlocal written
                async with db.transaction() as session:
                    for _ in range(k):
                        i = written % LEADS
                        ping = BenchPing(lead_id=leads[i], n=written, t_sched=0, t_add=0, pad=PAD)
                        await outbox.add(session, ping, subject=subjects[i])
                        written += 1

            out[k] = await _timed(units, prepare, unit)
    finally:
        await db.dispose()
    return out


async def consume_costs(url: str, sizes: Sequence[int], units: int) -> dict[int, Cost]:
    """CPU per `EventConsumer.process` of K new records, for each K: the records are
    what a relay publishes (the outbox's rows) as a Kafka subscription delivers them; the
    handler stages one row per event, as `bus.py`'s does."""
    db = Database(url)
    await create_schema(db)
    topic = "t.costs"
    catalog = catalog_with_bench_ping(topic)
    outbox = Outbox(service="costs", tables=outbox_tables, catalog=catalog)
    bus = LocalBus(Path(tempfile.mkdtemp(prefix="handoff-costs-")) / "bus.db")

    async def handle(ctx: HandlerContext, payload: BenchPing) -> None:
        ctx.stage(effects, event_id=ctx.event_id, lead_id=str(payload.lead_id), n=payload.n)

    consumer = EventConsumer(
        service="costs",
        group="costs",
        bus=bus,
        db=db,
        inbox=Inbox(inbox_table),
        catalog=catalog,
        handlers={BenchPing: [handle]},
    )
    leads = [uuid.uuid4() for _ in range(LEADS)]
    made = 0
    out: dict[int, Cost] = {}
    try:
        for k in sizes:

            async def prepare(k: int = k) -> list[Record]:
                nonlocal made
                async with db.transaction() as session:
                    for _ in range(k):
                        lead = leads[made % LEADS]
                        ping = BenchPing(lead_id=lead, n=made, t_sched=0, t_add=0, pad=PAD)
                        await outbox.add(session, ping, subject=str(lead))
                        made += 1
                c = outbox.table.c
                async with db.transaction() as session:
                    claim = outbox.table.delete().returning(*(c[name] for name in CLAIMED))
                    rows = (await session.execute(claim)).all()
                messages = outbox_messages(OutboxHeaders(outbox.source), rows)
                return [
                    Record(topic, 0, made + n, m.key, bytes(m.value), tuple(m.headers))
                    for n, m in enumerate(messages)
                ]

            async def unit(records: list[Record]) -> None:
                await consumer.process(records)

            out[k] = await _timed(units, prepare, unit)
    finally:
        await db.dispose()
    return out


def fit(costs: dict[int, float]) -> tuple[float, float]:
    """(fixed, per item) in seconds, from the smallest and the largest K."""
    small, large = min(costs), max(costs)
    per_item = (costs[large] - costs[small]) / (large - small)
    return costs[small] - small * per_item, per_item


def record(costs: dict[int, Cost]) -> dict[str, Any]:
    """One unit's figures for the results: per K, and the fixed and per-item fits."""
    process = {k: c[0] for k, c in costs.items()}
    server = {k: c[1] for k, c in costs.items()}
    fixed, per_item = fit(process)
    out = {
        "cpu_us_per_unit": {k: v * 1e6 for k, v in process.items()},
        "fixed_us": fixed * 1e6,
        "per_item_us": per_item * 1e6,
    }
    if any(server.values()):
        server_fixed, server_item = fit(server)
        out["server_cpu_us_per_unit"] = {k: v * 1e6 for k, v in server.items()}
        out["server_fixed_us"] = server_fixed * 1e6
        out["server_per_item_us"] = server_item * 1e6
    return out


async def main(args: argparse.Namespace) -> None:
    console = Console()
    # The collector as a service process runs it: every unit of work allocates per event,
    # and at Python's defaults its passes over the batch in hand were half of a consumer's
    # CPU here (an event's decoding ~17 against ~4 µs).
    settle_for_serving(args.gc_threshold)
    results: dict[str, Any] = {
        "machine": machine(),
        "units": args.units,
        "gc_threshold": args.gc_threshold,
    }
    postmaster = await postmaster_pid(postgres_admin_url())
    async with (
        FreshPgDatabase(postgres_admin_url(), "costs_relay") as pg_relay,
        FreshPgDatabase(postgres_admin_url(), "costs_capture") as pg_capture,
        FreshPgDatabase(postgres_admin_url(), "costs_produce") as pg_produce,
        FreshPgDatabase(postgres_admin_url(), "costs_consume") as pg_consume,
    ):
        scratch = Path(tempfile.mkdtemp(prefix="handoff-costs-"))
        units = {
            "relay": (relay_costs, RELAY_SIZES, pg_relay),
            "capture": (capture_costs, CAPTURE_SIZES, pg_capture),
            "produce": (produce_costs, PRODUCE_SIZES, pg_produce),
            "consume": (consume_costs, CONSUME_SIZES, pg_consume),
        }
        for what, (measure, sizes, pg_url) in units.items():
            if args.only and what not in args.only:
                continue
            for backend, url in (
                ("sqlite", f"sqlite+aiosqlite:///{scratch}/{what}.db"),
                ("postgres", pg_url),
            ):
                console.print(f"[dim]{what} on {backend}...[/dim]")
                POSTMASTER[0] = postmaster if backend == "postgres" else None
                results[f"{what}_{backend}"] = record(await measure(url, sizes, args.units))
    table = Table(title="CPU per unit of work (this process), by events or leads in the unit")
    table.add_column("unit of work")
    table.add_column("database")
    for k in ALL_SIZES:
        table.add_column(f"K={k}, µs", justify="right")
    table.add_column("fixed, µs", justify="right")
    table.add_column("per item, µs", justify="right")
    table.add_column("PostgreSQL server: fixed / per item, µs", justify="right")
    for key, r in results.items():
        if not isinstance(r, dict) or "fixed_us" not in r:
            continue
        what, backend = key.split("_")
        cells = [
            f"{r['cpu_us_per_unit'][k]:,.0f}" if k in r["cpu_us_per_unit"] else ""
            for k in ALL_SIZES
        ]
        server = (
            f"{r['server_fixed_us']:,.0f} / {r['server_per_item_us']:.1f}"
            if "server_fixed_us" in r
            else ""
        )
        table.add_row(
            what, backend, *cells, f"{r['fixed_us']:,.0f}", f"{r['per_item_us']:.1f}", server
        )
    console.print(table)
    console.print(f"results: {write_results('costs', results)}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--units", type=at_least(1), default=200, help="timed units of work per size (200)"
    )
    add_gc_threshold(p, "of this process")
    p.add_argument(
        "--only",
        action="append",
        choices=("relay", "capture", "produce", "consume"),
        help="measure only these units of work (repeatable; default: all)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    run_on_service_loop(main(parse_args()))
