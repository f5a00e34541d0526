"""Qualification benchmark: LeadActivity events scored and stage-evaluated per second by the
qualification service (one process, its consumer with inbox and outbox), on LocalBus +
SQLite and on Kafka + PostgreSQL. See bench/README.md for the method.

    PYTHONPATH=. .venv/bin/python bench/qualification.py [--quick] [--only local|kafka] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import inspect
import os
import random
import shlex
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `handoff bench` runs us by path

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from bench.common import (
    FreshPgDatabase,
    kafka_bootstrap_servers,
    machine,
    paced,
    percentile,
    postgres_admin_url,
    postgres_cpu_s,
    postmaster_pid,
    proc_cpu_s,
    system_busy,
    unique,
    write_results,
)
from services.qualification import handlers as q_handlers
from services.qualification import lead_state as q_lead_state
from services.qualification.app import definition as qualification_definition
from services.qualification.models import (
    inbox_table,
    lead_activity_facts,
    lead_states,
    outbox_tables,
    stage_transitions,
)
from shared.auth.token_store import TokenStore
from shared.bus.kafka import KafkaBus
from shared.bus.local import LocalBus
from shared.bus.port import Bus, OutgoingMessage, Record
from shared.consumer import ConsumerHooks, EventConsumer
from shared.db import Database
from shared.events.catalog import CATALOG, EventCatalog
from shared.events.codec import build_envelope, to_binary
from shared.events.payloads import LeadActivity, LeadCaptured, LeadScored, LeadStageChanged
from shared.handler_context import Batched
from shared.http import build_app
from shared.inbox import Inbox
from shared.migrations import upgrade
from shared.observability.logging import configure_logging
from shared.outbox import Outbox
from shared.process import run_on_service_loop
from shared.runtime import ServiceDefinition, ServiceRuntime
from shared.settings.loading import load_settings
from shared.settings.services import QualificationSettings

console = Console(width=None if sys.stdout.isatty() else 160)
SERVICE = "qualification"
TARGETS = {"local": 5000.0, "kafka": 3000.0}  # activity events/s, burst (backlog drain)
NAMES = {"local": "LocalBus + SQLite", "kafka": "Kafka + PostgreSQL"}

# --- the workload: realistic, non-PII lead profiles and activity mix --------------------------

SIZE_BANDS = ((1, 9), (10, 49), (50, 199), (200, 999), (1000, 20000))
SIZE_WEIGHTS = (12, 20, 25, 23, 20)
SENIORITY = {  # seniority -> (weight, job titles)
    "c_level": (5, ("CTO", "CMO", "CFO", "Chief Revenue Officer")),
    "vp": (8, ("VP Operations", "VP Engineering", "VP Marketing", "VP Sales")),
    "director": (15, ("Director of IT", "Marketing Director", "Head of Operations")),
    "manager": (25, ("IT Manager", "Marketing Manager", "Sales Operations Manager")),
    "senior": (20, ("Senior Engineer", "Senior Analyst", "Lead Developer")),
    "entry": (15, ("Marketing Associate", "Analyst", "Student", "Marketing Intern")),
    "": (12, ("", "Consultant")),
}
COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "NL", "SE", "CA", "IN", "BR", "JP", "ES", "AU")
DEPARTMENTS = ("it", "engineering", "marketing", "sales", "operations", "finance", "hr", "")
INDUSTRIES = ("software", "manufacturing", "retail", "financial services", "healthcare", "")
CHANNELS = ("organic", "paid_search", "paid_social", "email", "referral", "events")
FREEMAIL = ("gmail.com", "outlook.com", "yahoo.com", "gmx.de", "icloud.com")
# activity type -> weight (share of the stream); the default model scores all but call_logged
ACTIVITIES = {
    "page_view": 38.0,
    "email_open": 15.0,
    "pricing_page_view": 9.0,
    "email_click": 9.0,
    "content_download": 7.0,
    "ad_click": 5.0,
    "webinar_registered": 4.0,
    "form_submit": 4.0,
    "webinar_attended": 3.0,
    "chat_started": 2.0,
    "event_attended": 1.0,
    "demo_request": 1.5,
    "trial_signup": 0.5,
    "meeting_booked": 0.5,
    "email_unsubscribe": 0.7,
    "email_bounce": 0.3,
    "call_logged": 0.5,
}
PATHS_VISITED = ("/", "/pricing", "/blog/lead-scoring", "/product", "/customers", "/docs/api")


class Workload:
    """The leads (captured first) and the activity stream, as intake would publish them."""

    def __init__(self, catalog: EventCatalog, leads: int, seed: int) -> None:
        self.catalog = catalog
        self.rng = random.Random(seed)
        self.leads = [uuid.UUID(int=self.rng.getrandbits(128), version=4) for _ in range(leads)]
        self.subjects = [str(lead) for lead in self.leads]
        self.sequence = [0] * leads  # intake numbers each lead's events
        self.companies = [f"company{i:03d}.example" for i in range(300)]

    def _message(self, payload: Any, i: int) -> tuple[str, OutgoingMessage]:
        self.sequence[i] += 1
        envelope = build_envelope(
            self.catalog,
            payload,
            source_service="intake",
            subject=self.subjects[i],
            sequence=self.sequence[i],
        )
        key, headers, value = to_binary(envelope)
        topic = self.catalog.for_payload(payload).topic
        return str(envelope.id), OutgoingMessage(topic, key, value, headers)

    def captures(self) -> list[tuple[str, OutgoingMessage]]:
        rng = self.rng
        out = []
        seniorities = list(SENIORITY)
        weights = [SENIORITY[s][0] for s in seniorities]
        for i, lead in enumerate(self.leads):
            low, high = rng.choices(SIZE_BANDS, SIZE_WEIGHTS)[0]
            seniority = rng.choices(seniorities, weights)[0]
            profile = {
                "company_size": rng.randint(low, high),
                "seniority": seniority,
                "job_title": rng.choice(SENIORITY[seniority][1]),
                "country": rng.choice(COUNTRIES),
                "department": rng.choice(DEPARTMENTS),
                "industry": rng.choice(INDUSTRIES),
            }
            kind = rng.choices(("business", "freemail", "disposable"), (80, 16, 4))[0]
            domain = {
                "business": rng.choice(self.companies),
                "freemail": rng.choice(FREEMAIL),
                "disposable": "mailinator.com",
            }[kind]
            payload = LeadCaptured(
                lead_id=lead,
                source=rng.choices(("marketing", "sales"), (92, 8))[0],
                channel=rng.choice(CHANNELS),
                campaign=rng.choice((None, "q3-webinar", "pricing-retargeting", "ebook-2026")),
                account_id=uuid.UUID(int=rng.getrandbits(128), version=4)
                if kind == "business"
                else None,
                email_domain=domain,
                email_kind=kind,
                profile={k: v for k, v in profile.items() if v != ""},
            )
            out.append(self._message(payload, i))
        return out

    def activities(self, count: int) -> list[tuple[str, OutgoingMessage]]:
        """`count` activities, each for a lead drawn uniformly; happened within the last days."""
        rng = self.rng
        types, weights = list(ACTIVITIES), list(ACTIVITIES.values())
        now = datetime.now(UTC)
        out = []
        for activity_type in rng.choices(types, weights, k=count):
            i = rng.randrange(len(self.leads))
            age = timedelta(days=min(60.0, rng.expovariate(1 / 2.0)))  # mean 2 days
            properties: dict[str, Any] = {}
            if activity_type in ("page_view", "pricing_page_view"):
                properties["path"] = (
                    "/pricing"
                    if activity_type == "pricing_page_view"
                    else rng.choice(PATHS_VISITED)
                )
            elif activity_type.startswith("email_"):
                properties["campaign"] = "nurture-2026-w" + str(rng.randint(1, 52))
            payload = LeadActivity(
                lead_id=self.leads[i],
                activity_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                activity_type=activity_type,
                occurred_at=now - age,
                properties=properties,
            )
            out.append(self._message(payload, i))
        return out


# --- the service, in this process ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IsolatedDefinition(ServiceDefinition):
    """The qualification service with its own consumer group name (Kafka runs: a fresh group,
    so nothing another run or test left on the broker joins or is consumed)."""

    group: str = ""

    @property
    def consumer_group(self) -> str:
        return self.group or super().consumer_group


def isolated_catalog(prefix: str) -> EventCatalog:
    """The event catalog with every topic renamed `<prefix><topic>` (fresh topics per run)."""
    return EventCatalog([dataclasses.replace(t, topic=prefix + t.topic) for t in CATALOG])


class Tracker:
    """The consumer's `after_db_commit` hook: counts applied records per topic, keeps the
    commit times of activity batches, and the latency of events whose due time is known."""

    def __init__(self, activity_topic: str) -> None:
        self.activity_topic = activity_topic
        self.applied: dict[str, int] = defaultdict(int)
        self.commits: list[tuple[int, int]] = []  # (perf_counter_ns, activity records)
        self.due: dict[str, int] = {}  # ce_id -> when it was due (paced phase)
        self.latency_ns: list[int] = []
        self.on_applied: Callable[[int], None] = lambda _n: None
        self.first_commit = asyncio.Event()  # of activities, since commits were last cleared
        self._changed = asyncio.Event()

    async def committed(self, records: Sequence[Record]) -> None:
        now = time.perf_counter_ns()
        activities = 0
        for r in records:
            self.applied[r.topic] += 1
            if r.topic == self.activity_topic:
                activities += 1
        if self.due:
            for r in records:
                due = self.due.pop(r.header("ce_id") or "", None)
                if due is not None:
                    self.latency_ns.append(now - due)
        if activities:
            self.commits.append((now, activities))
            self.first_commit.set()
            self.on_applied(activities)
        self._changed.set()

    async def wait(self, topic: str, count: int, timeout: float) -> None:
        """Until `count` records of `topic` were applied (since the tracker was made)."""
        deadline = time.monotonic() + timeout
        while self.applied[topic] < count:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.applied[topic]:,} of {count:,} applied on {topic}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))


@contextlib.asynccontextmanager
async def serve(
    definition: ServiceDefinition,
    settings: QualificationSettings,
    bus: Bus,
    catalog: EventCatalog,
    tracker: Tracker,
) -> AsyncIterator[ServiceRuntime]:
    """The qualification service as `create_service_app` builds it, with the bus, catalog and
    consumer hooks injected, started and stopped through the app's lifespan."""
    runtime = ServiceRuntime(
        definition=definition,
        settings=settings,
        bus=bus,
        owns_bus=False,
        catalog=catalog,
        consumer_hooks=ConsumerHooks(after_db_commit=tracker.committed),
    )
    app = build_app(
        [runtime],
        title=f"handoff {SERVICE}",
        token_store=TokenStore(settings.resolved_tokens_file()),
        max_body_bytes=settings.max_body_bytes,
    )
    async with app.router.lifespan_context(app):
        yield runtime


async def publish_all(bus: Bus, messages: Sequence[OutgoingMessage], *, chunk: int = 1000) -> float:
    """Publish in chunks (as intake's relay does); returns the seconds it took."""
    t0 = time.perf_counter()
    for start in range(0, len(messages), chunk):
        await bus.publish(messages[start : start + chunk])
    return time.perf_counter() - t0


async def outbox_drained(db: Database, timeout: float) -> float:
    """Wait until the service's outbox is empty (the relay published everything); returns
    the perf_counter (s) when it was seen empty."""
    outbox = outbox_tables[0]
    deadline = time.monotonic() + timeout
    while True:
        async with db.engine.connect() as conn:
            left = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
        if left == 0:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"outbox still holds {left:,} events")
        await asyncio.sleep(0.02)


# --- measurements ----------------------------------------------------------------------------


class Cpu:
    """CPU over a phase: this process, its event-loop thread, PostgreSQL, the whole box."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self.wall = time.perf_counter()
        self.proc = proc_cpu_s(os.getpid())
        self.loop = time.thread_time()
        self.pg = postgres_cpu_s(postmaster)
        self.box = system_busy()

    def result(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.wall
        busy, total = system_busy()
        return {
            "process_cpu_cores": (proc_cpu_s(os.getpid()) - self.proc) / wall,
            "loop_cpu_cores": (time.thread_time() - self.loop) / wall,
            "postgres_cpu_cores": (postgres_cpu_s(self.postmaster) - self.pg) / wall
            if self.postmaster
            else None,
            "machine_busy": (busy - self.box[0]) / max(1, total - self.box[1]),
        }


def latency_ms(values_ns: Sequence[int]) -> dict[str, float]:
    values = sorted(v / 1e6 for v in values_ns)
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": values[-1] if values else float("nan"),
    }


def drain_rate(commits: Sequence[tuple[int, int]], expected: int) -> dict[str, Any]:
    """Throughput of a backlog drain from the consumer's commit times: events after the first
    committed batch / (first batch committed -> the last event committed), and per quarter."""
    t_first, first = commits[0]
    cumulative, marks = 0, []
    quarter = [expected * q // 4 for q in (1, 2, 3, 4)]
    for t, n in commits:  # a mark at the first commit past each quarter, with its real count
        cumulative += n
        if quarter and cumulative >= quarter[0]:
            marks.append((t, cumulative))
            while quarter and cumulative >= quarter[0]:
                quarter.pop(0)
    t_last = marks[-1][0]
    elapsed = (t_last - t_first) / 1e9
    quarters, t_prev, n_prev = [], t_first, first
    for t, n in marks:
        span = (t - t_prev) / 1e9
        quarters.append((n - n_prev) / span if span > 0 else float("nan"))
        t_prev, n_prev = t, n
    return {
        "events": expected,
        "first_batch": first,
        "batches": len(commits),
        "elapsed_s": elapsed,
        "events_per_s": (expected - first) / elapsed if elapsed > 0 else float("nan"),
        "quarters_events_per_s": quarters,
        "t_first_ns": t_first,
        "t_last_ns": t_last,
    }


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def consumer_metrics(group: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for payload in (LeadCaptured, LeadActivity):
        event_type = CATALOG.for_payload_type(payload).name
        for outcome in ("processed", "duplicate", "dead_lettered"):
            out[f"{event_type}:{outcome}"] = metric(
                "handoff_events_consumed_total",
                service=SERVICE,
                group=group,
                type=event_type,
                outcome=outcome,
            )
        out[f"{event_type}:failed_attempts"] = metric(
            "handoff_events_failed_total", service=SERVICE, group=group, type=event_type
        )
    out["outbox_published"] = metric("handoff_outbox_published_total", service=SERVICE)
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


# --- where the time goes: wall time per step (diagnostic, --profile) --------------------------


class Steps:
    """Wraps the service's functions with timers (inclusive wall time per call). The module
    globals the handlers call are replaced, so handlers see the timed versions; undone after."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []

    def timed(self, fn: Any, name: str) -> Any:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter_ns()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.ns[name] += time.perf_counter_ns() - t0
                    self.calls[name] += 1

            return wrapper

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ns[name] += time.perf_counter_ns() - t0
                self.calls[name] += 1

        return sync_wrapper

    def patch(self, owner: Any, attr: str, name: str) -> None:
        namespace = owner.__dict__ if isinstance(owner, type) else vars(owner)
        if attr not in namespace:  # the service changed: time what is still there
            console.print(f"[yellow]--steps: {owner.__name__}.{attr} no longer exists")
            return
        original = namespace[attr]
        setattr(owner, attr, self.timed(original, name))
        self._undo.append((owner, attr, original))

    # (owner, attribute, label); labels are what the table shows
    TIMED = (
        (EventConsumer, "process", "EventConsumer.process (a batch: all of the below + commit)"),
        (EventConsumer, "_decode", "  EventConsumer._decode (from_binary + pydantic payload)"),
        (Inbox, "claim", "  Inbox.claim (INSERT .. ON CONFLICT .. RETURNING, per batch)"),
        (None, "handler", "  handler lead_activities (a run of activity events)"),
        (q_handlers, "load_leads", "    load_leads (SELECT lead_states .. FOR UPDATE, per run)"),
        (q_handlers, "load_profiles", "    load_profiles (SELECT lead_facts, per run)"),
        (q_handlers, "load_histories", "    load_histories (SELECT activity facts, per run)"),
        (q_handlers, "active_model", "    active_model (cached)"),
        (q_handlers, "score", "    score() (pure Python, per event)"),
        (q_handlers, "announce", "    announce (lead.scored + MQL step, per event)"),
        (q_lead_state, "scored_event", "      scored_event (lead.scored, encoded)"),
        (Outbox, "add", "      Outbox.add"),
        (q_lead_state, "apply_step", "      apply_step (stage change to MQL)"),
        (q_lead_state.Writes, "write", "    Writes.write (transitions, stages, scores; per run)"),
        (Outbox, "_flush", "  Outbox._flush (sequences + INSERT outbox, before commit)"),
    )

    def install(self) -> None:
        for owner, attr, label in self.TIMED:
            if owner is not None:
                self.patch(owner, attr, label)

    def label(self, attr: str) -> str:
        return next(label for _o, a, label in self.TIMED if a == attr)

    def wrap_handlers(self, definition: ServiceDefinition) -> ServiceDefinition:
        original = definition.handlers
        assert original is not None
        label = self.label("handler")

        def handlers(runtime: ServiceRuntime) -> Any:
            out = dict(original(runtime))
            batched = out[LeadActivity]
            assert isinstance(batched, Batched), "activities are expected to be handled in runs"
            out[LeadActivity] = Batched(self.timed(batched.handle, label))
            return out

        return dataclasses.replace(definition, handlers=handlers)

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def per_event(self, events: int) -> list[dict[str, Any]]:
        """µs per activity event for each step, and the remainders nothing else explains."""
        us = {label: self.ns.get(label, 0) / events / 1e3 for _o, _a, label in self.TIMED}
        rows: list[dict[str, Any]] = [
            {"step": label, "calls": self.calls.get(label, 0), "us_per_event": us[label]}
            for _o, _a, label in self.TIMED
        ]

        def u(attr: str) -> float:
            return us[self.label(attr)]

        process_rest = u("process") - u("_decode") - u("claim") - u("handler") - u("_flush")
        handler_parts = ("load_leads", "load_profiles", "load_histories", "active_model")
        handler_rest = u("handler") - sum(u(a) for a in handler_parts)
        handler_rest -= u("score") + u("announce") + u("write")
        remainders = {
            "  = process - decode - claim - handler - flush (BEGIN/COMMIT, session, hooks)": (
                process_rest
            ),
            "    = handler - the above (INSERT of the facts, ActivityFact, loop)": handler_rest,
        }
        rows += [{"step": k, "calls": None, "us_per_event": v} for k, v in remainders.items()]
        return rows


# --- one path ---------------------------------------------------------------------------------


async def topic_count(bus: Bus, topic: str, partitions: int) -> int:
    """How many records a (fresh) topic holds."""
    if isinstance(bus, LocalBus):
        row = bus.conn.execute("SELECT count(*) FROM records WHERE topic = ?", (topic,)).fetchone()
        return int(row[0])
    assert isinstance(bus, KafkaBus)
    consumer = AIOKafkaConsumer(bootstrap_servers=bus.bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        return sum(end[tp] - begin[tp] for tp in tps)
    finally:
        await consumer.stop()


async def database_counts(url: str) -> dict[str, Any]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:

            async def count(table: Any) -> int:
                query = select(func.count()).select_from(table)
                return int((await conn.execute(query)).scalar_one())

            stages = {
                r.stage: int(r.n)
                for r in await conn.execute(
                    select(lead_states.c.stage, func.count().label("n")).group_by(
                        lead_states.c.stage
                    )
                )
            }
            per_lead = (
                select(func.count().label("n"))
                .select_from(lead_activity_facts)
                .group_by(lead_activity_facts.c.lead_id)
                .subquery()
            )
            most = (await conn.execute(select(func.max(per_lead.c.n)))).scalar()
            return {
                "lead_states": await count(lead_states),
                "stages": stages,
                "lead_activity_facts": await count(lead_activity_facts),
                "max_activities_per_lead": int(most or 0),
                "stage_transitions": await count(stage_transitions),
                "inbox": await count(inbox_table),
                "outbox_left": await count(outbox_tables[0]),
            }
    finally:
        await db.dispose()


class PathRun:
    """One path: the service on one bus and database, through every phase."""

    def __init__(
        self,
        key: str,
        args: argparse.Namespace,
        progress: Progress,
        *,
        bus: Bus,
        database_url: str,
        workdir: Path,
        definition: ServiceDefinition,
        catalog: EventCatalog,
        servers: str | None,
        postmaster: int | None,
    ) -> None:
        self.key = key
        self.name = NAMES[key]
        self.args = args
        self.progress = progress
        self.bus = bus
        self.database_url = database_url
        self.definition = definition
        self.catalog = catalog
        self.postmaster = postmaster
        settings = load_settings(
            SERVICE,
            database_url=database_url,
            kafka_bootstrap_servers=servers,
            data_dir=workdir,
            env="dev",
            consumer_batch_size=args.consumer_batch,
            outbox_batch_size=args.relay_batch,
            topic_partitions=args.partitions,
            log_level="warning",
        )
        assert isinstance(settings, QualificationSettings)
        self.settings = settings
        self.activity_topic = catalog.for_payload_type(LeadActivity).topic
        self.captured_topic = catalog.for_payload_type(LeadCaptured).topic
        self.tracker = Tracker(self.activity_topic)
        self.steps = Steps() if args.profile or args.steps else None

    def serve(self) -> contextlib.AbstractAsyncContextManager[ServiceRuntime]:
        return serve(self.definition, self.settings, self.bus, self.catalog, self.tracker)

    def _task(self, label: str, total: int) -> Any:
        task = self.progress.add_task(f"{self.name}: {label}", total=total)
        self.tracker.on_applied = lambda n: self.progress.advance(task, n)
        return task

    def _done(self, task: Any, text: str) -> None:
        self.progress.update(task, description=f"{self.progress.tasks[task].description} {text}")

    async def run(self) -> dict[str, Any]:
        args = self.args
        out: dict[str, Any] = {"consumer_group": self.definition.consumer_group}
        await upgrade(self.definition.migrations, self.database_url)
        await self.bus.ensure_topics(sorted({t.topic for t in self.catalog}))
        if isinstance(self.bus, KafkaBus):  # fresh topics: let their leaders settle first
            for topic in sorted({t.topic for t in self.catalog}):
                await self.bus.producer.partitions_for(topic)
            await asyncio.sleep(1.0)
        workload = Workload(self.catalog, args.leads, args.seed)
        metrics_before = consumer_metrics(self.definition.consumer_group)

        # 1. the leads are captured, then a warm-up of activities (connections, caches)
        captures = workload.captures()
        warmup = workload.activities(args.warmup)
        async with self.serve():
            task = self.progress.add_task(f"{self.name}: capture {args.leads:,} leads", total=1)
            t0 = time.perf_counter_ns()
            await publish_all(self.bus, [m for _, m in captures])
            await self.tracker.wait(self.captured_topic, args.leads, args.timeout)
            captured_s = (time.perf_counter_ns() - t0) / 1e9
            out["captures"] = {
                "events": args.leads,
                "elapsed_s": captured_s,
                "events_per_s": args.leads / captured_s,
                "note": "published while the service ran: publishing included",
            }
            self.progress.update(task, completed=1)
            self._done(task, f"[green]{args.leads / captured_s:,.0f}/s")
            task = self._task("warm-up", args.warmup)
            await publish_all(self.bus, [m for _, m in warmup])
            await self.tracker.wait(self.activity_topic, args.warmup, args.timeout)
        # stopped: the consumer committed its offsets, the relay finished its batch

        # 2. the backlog: M activities on the bus while the service is down
        backlog = workload.activities(args.activities)
        task = self.progress.add_task(f"{self.name}: publish backlog", total=1)
        publish_s = await publish_all(self.bus, [m for _, m in backlog])
        self.progress.update(task, completed=1)
        self._done(task, f"[green]{args.activities:,} in {publish_s:.1f} s")
        out["backlog_publish_s"] = publish_s

        # 3. burst: the service starts and drains the backlog; 4. paced, with latency
        self.tracker.commits.clear()
        self.tracker.first_commit.clear()
        base = args.warmup
        definition = self.definition
        if self.steps is not None:
            self.steps.install()
            self.definition = self.steps.wrap_handlers(definition)
        profiler = None
        try:
            async with self.serve() as runtime:
                t_started = time.perf_counter_ns()
                if args.profile:
                    from pyinstrument import Profiler

                    profiler = Profiler(interval=0.0005, async_mode="disabled")
                    profiler.start()
                task = self._task("burst (drain the backlog)", args.activities)
                await asyncio.wait_for(self.tracker.first_commit.wait(), args.timeout)
                cpu = Cpu(self.postmaster)
                await self.tracker.wait(self.activity_topic, base + args.activities, args.timeout)
                cpu_result = cpu.result()
                burst = drain_rate(self.tracker.commits, args.activities)
                if profiler is not None:
                    session = profiler.stop()
                    out["profile_file"] = str(self._save_profile(session))
                if self.steps is not None:
                    self.steps.restore()
                    out["steps_us_per_event"] = self.steps.per_event(args.activities)
                t_relayed = await outbox_drained(runtime.db, args.timeout)
                burst["join_s"] = (burst["t_first_ns"] - t_started) / 1e9
                burst["relay_done_s"] = t_relayed - burst["t_first_ns"] / 1e9
                burst["events_per_s_incl_relay"] = (args.activities - burst["first_batch"]) / (
                    burst["relay_done_s"]
                )
                burst.update(cpu_result)
                burst["activities_per_lead"] = {
                    "start": base / args.leads,
                    "end": (base + args.activities) / args.leads,
                }
                burst["profiled"] = bool(args.profile)
                out["burst"] = burst
                self._done(task, f"[green]{burst['events_per_s']:,.0f}/s")
                base += args.activities

                target = TARGETS[self.key]
                rate = args.rate or (
                    target
                    if burst["events_per_s"] >= target and not args.profile
                    else max(10.0, round(0.8 * burst["events_per_s"], -1))
                )
                count = max(100, int(rate * args.paced_seconds))
                out["paced"] = await self._paced(workload, rate, count, base)
                base += count
                await outbox_drained(runtime.db, args.timeout)
                out["bus"] = {
                    "lead.scored": await topic_count(
                        self.bus, self.catalog.for_payload_type(LeadScored).topic, args.partitions
                    ),
                    "lead.stage_changed": await topic_count(
                        self.bus,
                        self.catalog.for_payload_type(LeadStageChanged).topic,
                        args.partitions,
                    ),
                }
        finally:
            if self.steps is not None:
                self.steps.restore()
            self.definition = definition
        out["metrics"] = delta(consumer_metrics(definition.consumer_group), metrics_before)
        out["database"] = await database_counts(self.database_url)
        out["activities_total"] = base
        out["verification"] = self._verify(out)
        return out

    async def _paced(
        self, workload: Workload, rate: float, count: int, base: int
    ) -> dict[str, Any]:
        events = workload.activities(count)
        task = self._task(f"paced {rate:,.0f}/s", count)
        tracker = self.tracker
        tracker.latency_ns.clear()

        async def write(batch: Sequence[tuple[int, int]]) -> None:
            messages = []
            for n, t_due in batch:
                event_id, message = events[n]
                tracker.due[event_id] = t_due
                messages.append(message)
            await self.bus.publish(messages)

        cpu = Cpu(self.postmaster)
        t0 = time.perf_counter_ns()
        await paced(0, count, rate, 200, write)
        await tracker.wait(self.activity_topic, base + count, self.args.timeout)
        elapsed = (time.perf_counter_ns() - t0) / 1e9
        result: dict[str, Any] = {
            "events": count,
            "offered_rate": rate,
            "elapsed_s": elapsed,
            "events_per_s": count / elapsed,
            "latency_ms": latency_ms(tracker.latency_ns),
            "latency_samples": len(tracker.latency_ns),
            **cpu.result(),
        }
        tracker.due.clear()
        self._done(task, f"[green]p99 {result['latency_ms']['p99']:.0f} ms")
        return result

    def _save_profile(self, session: Any) -> Path:
        name = f"qualification-profile-{self.key}-{self.args.stamp}.pyisession"
        path: Path = self.args.results_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        session.save(str(path))
        return path

    def _verify(self, out: dict[str, Any]) -> dict[str, Any]:
        args = self.args
        activity = CATALOG.for_payload_type(LeadActivity).name
        captured = CATALOG.for_payload_type(LeadCaptured).name
        m, db = out["metrics"], out["database"]
        total = out["activities_total"]
        expected_scored = args.leads + total  # a capture and every activity each rescore once
        failures = sum(v for k, v in m.items() if k.endswith(("dead_lettered", "failed_attempts")))
        checks = {
            "captures processed": (m[f"{captured}:processed"], args.leads),
            "activities processed": (m[f"{activity}:processed"], total),
            "activity facts stored": (db["lead_activity_facts"], total),
            "lead.scored on the bus": (out["bus"]["lead.scored"], expected_scored),
            "outbox empty": (db["outbox_left"], 0),
            "failures + dead letters": (failures, 0),
        }
        ok = all(got == want for got, want in checks.values())
        mql = db["stages"].get("mql", 0)
        return {
            "checks": {k: {"got": got, "expected": want} for k, (got, want) in checks.items()},
            "expected_lead_scored": expected_scored,
            "mql_leads": mql,
            "pass": ok and mql > 0 and out["bus"]["lead.scored"] >= args.activities,
        }


# --- the paths ------------------------------------------------------------------------------


async def run_local(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="handoff-bench-qual-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        bus = LocalBus(workdir / "events.db", partitions=args.partitions)
        await bus.start()
        try:
            run = PathRun(
                "local",
                args,
                progress,
                bus=bus,
                database_url=f"sqlite+aiosqlite:///{workdir / SERVICE}.db",
                workdir=workdir,
                definition=qualification_definition(),  # the real one: a fresh log, real names
                catalog=CATALOG,
                servers=None,
                postmaster=None,
            )
            return await run.run()
        finally:
            await bus.close()


async def run_kafka(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from bench.bus import delete_topics

    servers = kafka_bootstrap_servers()
    admin_url = postgres_admin_url()
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    catalog = isolated_catalog(prefix)
    topics = sorted({t.topic for t in catalog})
    definition = IsolatedDefinition(
        **{
            f.name: getattr(qualification_definition(), f.name)
            for f in dataclasses.fields(ServiceDefinition)
        },
        group=unique("bench-qualification"),
    )
    with tempfile.TemporaryDirectory(prefix="handoff-bench-qual-", dir=args.workdir) as tmp:
        async with FreshPgDatabase(admin_url, "qualification", keep=args.keep) as url:
            bus = KafkaBus(servers, client_id=unique("bench-qual"), partitions=args.partitions)
            await bus.start()
            try:
                run = PathRun(
                    "kafka",
                    args,
                    progress,
                    bus=bus,
                    database_url=url,
                    workdir=Path(tmp),
                    definition=definition,
                    catalog=catalog,
                    servers=servers,
                    postmaster=await postmaster_pid(url),
                )
                result = await run.run()
                result["topics"] = topics
                return result
            finally:
                await bus.close()
                if not args.keep:
                    await delete_topics(servers, topics)


# --- report -----------------------------------------------------------------------------------


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, r in results.items():
        rate = r["burst"]["events_per_s"]
        target = TARGETS[key]
        verified = r["verification"]["pass"]
        out.append(
            {
                "target": f"{NAMES[key]}: >= {target:,.0f} activity events/s "
                "(scored + stage-evaluated, inbox + outbox)",
                "measured": rate,
                "unit": "events/s",
                "verified": verified,
                "profiled": r["burst"]["profiled"],
                "pass": rate >= target and verified and not r["burst"]["profiled"],
            }
        )
    return out


def _cpu(r: dict[str, Any]) -> tuple[str, str, str]:
    pg = r.get("postgres_cpu_cores")
    return (
        f"{r['process_cpu_cores']:.2f} ({r['loop_cpu_cores']:.2f})",
        "-" if pg is None else f"{pg:.2f}",
        f"{r['machine_busy']:.0%}",
    )


def report(results: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    table = Table(
        title="Qualification: LeadActivity -> fact + rescore + lead.scored (+ MQL), one process"
    )
    for column in (
        "path",
        "phase",
        "events",
        "offered/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "py CPU (loop)",
        "PG CPU",
        "box busy",
    ):
        table.add_column(column, justify="left" if column in ("path", "phase") else "right")
    for key, r in results.items():
        c = r["captures"]
        table.add_row(
            NAMES[key], "captures (publish + apply)", f"{c['events']:,}", "-",
            f"{c['events_per_s']:,.0f}", "-", "-", "-", "-", "-",
        )  # fmt: skip
        b = r["burst"]
        apl = b["activities_per_lead"]
        table.add_row(
            NAMES[key],
            f"burst: drain backlog ({apl['start']:.0f} -> {apl['end']:.0f} act./lead)"
            + (" [yellow](profiled)" if b["profiled"] else ""),
            f"{b['events']:,}",
            "backlog",
            f"[bold]{b['events_per_s']:,.0f}[/bold]",
            "-",
            "-",
            *_cpu(b),
        )
        table.add_row(
            NAMES[key], "  incl. relay (lead.scored published)", "", "",
            f"{b['events_per_s_incl_relay']:,.0f}", "", "", "", "", "",
        )  # fmt: skip
        table.add_row(
            NAMES[key],
            "  by quarter of the backlog",
            "",
            "",
            " / ".join("-" if q != q else f"{q:,.0f}" for q in b["quarters_events_per_s"]),
            "",
            "",
            "",
            "",
            "",
        )
        p = r["paced"]
        table.add_row(
            NAMES[key],
            "paced (due -> consumer commit)",
            f"{p['events']:,}",
            f"{p['offered_rate']:,.0f}",
            f"{p['events_per_s']:,.0f}",
            f"{p['latency_ms']['p50']:.1f}",
            f"{p['latency_ms']['p99']:.1f}",
            *_cpu(p),
        )
    console.print(table)

    checks = Table(title="Verification (the service's database, the bus, its metrics)")
    for column in ("path", "check", "got", "expected"):
        checks.add_column(column, justify="left" if column in ("path", "check") else "right")
    for key, r in results.items():
        v = r["verification"]
        for name, c in v["checks"].items():
            mark = "" if c["got"] == c["expected"] else " [red]X"
            checks.add_row(NAMES[key], name, f"{c['got']:,.0f}{mark}", f"{c['expected']:,.0f}")
        stages = ", ".join(f"{s} {n:,}" for s, n in sorted(r["database"]["stages"].items()))
        checks.add_row(NAMES[key], "leads by stage", stages, "mql > 0")
        checks.add_row(
            NAMES[key],
            "lead.stage_changed on the bus",
            f"{r['bus']['lead.stage_changed']:,}",
            f"= transitions {r['database']['stage_transitions']:,}",
        )
    console.print(checks)

    for key, r in results.items():
        if "steps_us_per_event" in r:
            steps = Table(
                title=f"{NAMES[key]}: wall time per activity event by step (inclusive"
                + (", pyinstrument overhead included)" if r["burst"]["profiled"] else ")")
            )
            steps.add_column("step")
            steps.add_column("calls", justify="right")
            steps.add_column("µs/event", justify="right")
            for row in r["steps_us_per_event"]:
                calls = "" if row["calls"] is None else f"{row['calls']:,}"
                steps.add_row(row["step"], calls, f"{row['us_per_event']:,.0f}")
            console.print(steps)
        if "profile" in r:
            from bench.intake import print_profile

            print_profile(NAMES[key], r["profile"])

    verdict = Table(title="Targets")
    verdict.add_column("target")
    verdict.add_column("measured", justify="right")
    verdict.add_column("result")
    for t in targets:
        result = "[green]PASS[/green]" if t["pass"] else "[red]MISS[/red]"
        if not t["verified"]:
            result += " (verification failed)"
        if t["profiled"]:
            result += " (profiled run: not a measurement)"
        verdict.add_row(t["target"], f"{t['measured']:,.0f} {t['unit']}", result)
    console.print(verdict)


async def main(args: argparse.Namespace) -> int:
    configure_logging(level="warning", json=False)
    paths = args.only or ["local", "kafka"]
    results: dict[str, Any] = {}
    from bench.intake import code_version

    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        if "local" in paths:
            results["local"] = await run_local(args, progress)
        if "kafka" in paths:
            results["kafka"] = await run_kafka(args, progress)
    if args.profile:
        from bench.intake import profile_summary

        for r in results.values():
            r["profile"] = profile_summary(Path(r["profile_file"]), args.activities, "event")
    targets = verdicts(results)
    report(results, targets)
    saved = write_results(
        "qualification",
        {
            "benchmark": "qualification",
            "config": vars(args),
            "machine": machine(),
            "code": code_version(),  # the commit measured, and files under services/ shared/
            "wall_s": time.perf_counter() - started,
            "results": results,
            "targets": targets,
        },
        stamp=args.stamp,
    )
    console.print(f"results: {saved}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--leads", type=int, default=1000, help="leads captured first (default 1000)")
    p.add_argument(
        "--activities",
        type=int,
        default=20000,
        help="activity events in the measured backlog (default 20000)",
    )
    p.add_argument(
        "--warmup", type=int, default=1000, help="activity events before the burst (default 1000)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="paced phase, events/s (default: the path's target if the burst reached it,\n"
        "else 80%% of the burst's rate)",
    )
    p.add_argument("--paced-seconds", type=float, default=5.0, help="paced phase length (5)")
    p.add_argument("--consumer-batch", type=int, default=1000, help="HANDOFF_CONSUMER_BATCH_SIZE")
    p.add_argument("--relay-batch", type=int, default=1000, help="HANDOFF_OUTBOX_BATCH_SIZE")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--seed", type=int, default=7, help="workload random seed")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per phase at most")
    p.add_argument(
        "--only", action="append", choices=["local", "kafka"], help="run only these paths"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="diagnostic: pyinstrument over the burst and wall time per step of the\n"
        "service's functions; throughput is lower (no PASS)",
    )
    p.add_argument(
        "--steps",
        action="store_true",
        help="diagnostic: wall time per step of the service's functions (timers around\n"
        "them, a few µs per event), without pyinstrument",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 200 leads, 3,000 activities")
    p.add_argument("--workdir", default=None, help="where the SQLite files go (default: tmp)")
    p.add_argument("--keep", action="store_true", help="keep Kafka topics and the PG database")
    args = p.parse_args(argv)
    if args.quick:
        args.leads, args.activities, args.warmup = 200, 3000, 200
        args.paced_seconds = min(args.paced_seconds, 2.0)
    args.stamp = time.strftime("%Y%m%dT%H%M%S")
    args.results_dir = Path(__file__).resolve().parent / "results"
    return args


if __name__ == "__main__":
    # `handoff bench qualification` passes no arguments: BENCH_ARGS stands in for them
    argv = sys.argv[1:] or shlex.split(os.environ.get("BENCH_ARGS", ""))
    sys.exit(run_on_service_loop(main(parse_args(argv))))
