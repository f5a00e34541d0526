"""Outbox -> bus -> inbox: events commit with the state change and apply exactly once.

Runs on SQLite and PostgreSQL, over LocalBus and Kafka (PostgreSQL and Kafka are real).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

import shared.bulk_writes
from shared.bus.local import LocalBus
from shared.bus.port import Bus
from shared.consumer import ConsumerHooks, EventConsumer
from shared.db import Database, before_commit
from shared.db_drivers import pg_driver
from shared.events.catalog import CATALOG, EventType
from shared.events.codec import OutboxHeaders, sequence_text
from shared.events.envelope import Envelope
from shared.events.payloads import Payload
from shared.handler_context import Handler, HandlerContext
from shared.inbox import Inbox
from shared.outbox import Outbox
from shared.outbox_relay import CLAIMED, OutboxRelay, outbox_messages
from tests.conftest import new_pg_database, unique
from tests.support import (
    Ping,
    catalog_with_ping,
    collect,
    count_effects,
    create_schema,
    effect_ns,
    effects,
    eventually,
    inbox_table,
    outbox_tables,
    ping_consumer,
    ping_records,
    record_effect,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Database, Database]]:
    """A producer's and a consumer's database (each service has its own)."""
    if request.param == "sqlite":
        pair = (
            Database(f"sqlite+aiosqlite:///{tmp_path / 'producer.db'}"),
            Database(f"sqlite+aiosqlite:///{tmp_path / 'consumer.db'}"),
        )
        for db in pair:
            await create_schema(db)
        yield pair
        for db in pair:
            await db.dispose()
        return
    admin = request.getfixturevalue("postgres_admin_url")
    async with new_pg_database(admin) as producer_url, new_pg_database(admin) as consumer_url:
        pair = (Database(producer_url), Database(consumer_url))
        for db in pair:
            await create_schema(db)
        yield pair
        for db in pair:
            await db.dispose()


async def outbox_rows(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(outbox_tables[0]))).scalar_one()
        )


class Numbered(NamedTuple):
    """An outbox row: its subject, the `ce_sequence` it is published with, its id."""

    subject: str
    sequence: str
    id: int


async def relayed(db: Database, outbox: Outbox) -> list[tuple[int, dict[str, str]]]:
    """Every event in the outbox, in id order (the relay's): its row's id and the headers
    the relay publishes it with."""
    table = outbox.table
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(select(*(table.c[c] for c in CLAIMED)).order_by(table.c.id))
        ).all()
    messages = outbox_messages(OutboxHeaders(outbox.source), rows)
    return [
        (row.id, {name: value.decode() for name, value in m.headers})
        for row, m in zip(rows, messages, strict=True)
    ]


async def outbox_numbers(db: Database, outbox: Outbox) -> list[Numbered]:
    """Every event in the outbox, in id order (the relay's), numbered as it goes out."""
    return [
        Numbered(headers["ce_subject"], headers["ce_sequence"], row_id)
        for row_id, headers in await relayed(db, outbox)
    ]


async def numbered(
    db: Database, outbox: Outbox, transactions: list[Sequence[uuid.UUID]]
) -> list[Numbered]:
    """Add a ping per lead, a transaction per list; every event in the outbox, numbered."""
    for leads in transactions:
        async with db.transaction() as session:
            for lead in leads:
                await outbox.add(session, Ping(lead_id=lead, n=0), subject=str(lead))
    return await outbox_numbers(db, outbox)


def expected_sequences(db: Database, events: list[Numbered], sqlite: list[int]) -> list[str]:
    """What each event's `ce_sequence` must be: its row's id on PostgreSQL, and on SQLite
    the subject's counter (`sqlite`, 1, 2, 3 per subject)."""
    return (
        [sequence_text(e.id) for e in events]
        if db.is_postgres
        else [sequence_text(n) for n in sqlite]
    )


def increasing_per_subject(events: list[Numbered]) -> bool:
    """True when each subject's sequences grow with the row ids (the relay's order)."""
    last: dict[str, str] = {}
    for event in events:  # (in id order)
        if event.sequence <= last.get(event.subject, ""):
            return False
        last[event.subject] = event.sequence
    return True


async def test_a_state_change_and_its_events_commit_together_and_apply_once_downstream(
    databases: tuple[Database, Database], bus: Bus
) -> None:
    producer_db, consumer_db = databases
    topic = unique("t.outbox")
    catalog = catalog_with_ping(topic)
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog)
    relay = OutboxRelay(db=producer_db, outbox=outbox, bus=bus, batch_size=7)
    leads = [uuid.uuid4() for _ in range(5)]
    async with producer_db.transaction() as session:
        for n in range(40):
            lead = leads[n % 5]
            await session.execute(insert(effects).values(event_id="local", lead_id=str(lead), n=n))
            await outbox.add(session, Ping(lead_id=lead, n=n), subject=str(lead))
    consumer = ping_consumer(bus, consumer_db, catalog, group=unique("g"))
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]

    async def all_applied() -> bool:
        return await count_effects(consumer_db) == 40

    await eventually(all_applied, timeout=60)
    relay.stop()
    consumer.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)

    assert await outbox_rows(producer_db) == 0
    per_lead: dict[int, list[int]] = {}
    for n in await effect_ns(consumer_db):
        per_lead.setdefault(n % 5, []).append(n)
    assert all(ns == sorted(ns) for ns in per_lead.values())  # per-lead order kept


async def test_a_rolled_back_transaction_leaves_no_event(
    databases: tuple[Database, Database],
) -> None:
    producer_db, _ = databases
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    lead = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with producer_db.transaction() as session:
            await outbox.add(session, Ping(lead_id=lead, n=1), subject=str(lead))
            raise RuntimeError("the state change failed")
    assert await outbox_rows(producer_db) == 0
    assert not outbox.wake.is_set()


async def test_each_subjects_events_are_numbered_in_the_order_they_were_written(
    databases: tuple[Database, Database],
) -> None:
    """PostgreSQL numbers an event by its row's id, SQLite by its subject's counter (1, 2,
    3): either way a subject's numbers grow in the order its events are published."""
    producer_db, _ = databases
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    a, b = uuid.uuid4(), uuid.uuid4()
    events = await numbered(producer_db, outbox, [(a, b, a), (a, b)])  # two transactions
    assert [e.subject for e in events] == [str(a), str(b), str(a), str(a), str(b)]
    assert [e.sequence for e in events] == expected_sequences(producer_db, events, [1, 1, 2, 3, 2])
    assert increasing_per_subject(events)
    assert sequence_text(9) < sequence_text(10)  # the text orders as the numbers do


async def test_concurrent_transactions_number_each_subject_in_id_order(
    databases: tuple[Database, Database],
) -> None:
    """The relay publishes by id: a subject's sequence must grow with the id (on SQLite
    without gaps), however transactions touching it interleave; and each row keeps its own
    headers."""
    producer_db, _ = databases
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    leads = [uuid.uuid4() for _ in range(4)]
    added: dict[str, tuple[str, int]] = {}  # event id -> (subject, n)

    async def writer(w: int) -> None:
        async with producer_db.transaction() as session:
            for k in range(12):
                lead = leads[(w + k * (w % 3 + 1)) % len(leads)]
                n = w * 100 + k
                event_id = await outbox.add(session, Ping(lead_id=lead, n=n), subject=str(lead))
                added[str(event_id)] = (str(lead), n)
                await asyncio.sleep(0)

    await asyncio.gather(*(writer(w) for w in range(6)))
    async with producer_db.engine.connect() as conn:
        rows = (await conn.execute(select(outbox_tables[0]).order_by(outbox_tables[0].c.id))).all()
    published = await relayed(producer_db, outbox)
    assert len(rows) == len(published) == len(added) == 72
    per_subject: dict[str, list[int]] = {}
    per_writer: dict[int, list[int]] = {}
    for row, (row_id, headers) in zip(rows, published, strict=True):
        subject, n = added[row.event_id]
        assert headers["ce_id"] == row.event_id and headers["ce_subject"] == subject == row.key
        assert orjson.loads(row.value)["n"] == n
        sequence = int(headers["ce_sequence"])
        assert sequence == row.id == row_id or not producer_db.is_postgres
        per_subject.setdefault(subject, []).append(sequence)
        per_writer.setdefault(n // 100, []).append(n)
    for sequences in per_subject.values():
        assert sequences == sorted(set(sequences))
        assert sequences == list(range(1, len(sequences) + 1)) or producer_db.is_postgres
    for ns in per_writer.values():
        assert ns == sorted(ns)  # a transaction's events take ids in the order they were added


@pytest.mark.parametrize("databases", ["postgres"], indirect=True)
async def test_a_transaction_holding_a_subjects_events_makes_the_next_writer_of_it_wait(
    databases: tuple[Database, Database],
) -> None:
    """PostgreSQL numbers events by id, so ids must follow each subject's commits: while a
    transaction that wrote events about a subject has not committed, another writing about
    that subject waits (then takes later ids), and one writing about another does not."""
    producer_db, _ = databases
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    a, b = uuid.uuid4(), uuid.uuid4()
    written, release = asyncio.Event(), asyncio.Event()

    async def hold(session: AsyncSession) -> None:  # after the outbox's flush, before commit
        await (await pg_driver(session)).write_deferred_now()
        written.set()
        await release.wait()

    async def first() -> None:
        async with producer_db.transaction() as session:
            await outbox.add(session, Ping(lead_id=a, n=1), subject=str(a))
            before_commit(session, hold)

    async def write(lead: uuid.UUID, n: int) -> None:
        async with producer_db.transaction() as session:
            await outbox.add(session, Ping(lead_id=lead, n=n), subject=str(lead))

    holder = asyncio.create_task(first())
    await asyncio.wait_for(written.wait(), timeout=10)
    same, other = asyncio.create_task(write(a, 2)), asyncio.create_task(write(b, 3))
    await asyncio.wait_for(other, timeout=10)  # another subject: not held
    await asyncio.sleep(0.5)
    assert not same.done()  # waits for the holder's commit
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, same), timeout=10)

    events = await outbox_numbers(producer_db, outbox)
    assert [e.subject for e in events] == [str(a), str(b), str(a)]  # by id: a's first, then b's
    assert [e.sequence for e in events] == [sequence_text(e.id) for e in events]


async def test_the_relay_publishes_each_event_with_its_number(
    databases: tuple[Database, Database], bus: Bus
) -> None:
    """What a subscriber reads in `ce_sequence` is the number the outbox gave the event (on
    PostgreSQL its row's id, filled in as the relay publishes), in each lead's order."""
    producer_db, _ = databases
    topic = unique("t.numbered")
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping(topic))
    a, b = uuid.uuid4(), uuid.uuid4()
    events = await numbered(producer_db, outbox, [(a, b, a), (b, a)])
    await bus.ensure_topics([topic])
    relay = OutboxRelay(db=producer_db, outbox=outbox, bus=bus, batch_size=100)
    assert await relay.relay_once() == 5

    subscription = bus.subscribe(group=unique("g"), topics=[topic])
    await subscription.start()
    records = await collect(subscription, 5)
    await subscription.close()
    published: dict[str, list[str]] = {}
    for record in records:
        published.setdefault(record.key or "", []).append(record.header("ce_sequence") or "")
    for lead in (a, b):
        assert published[str(lead)] == [e.sequence for e in events if e.subject == str(lead)]
    assert all(sequences == sorted(sequences) for sequences in published.values())
    assert "000000000000" not in {s for sequences in published.values() for s in sequences}


async def test_a_redelivered_event_is_dropped_by_the_inbox(
    databases: tuple[Database, Database], bus: Bus
) -> None:
    producer_db, consumer_db = databases
    topic = unique("t.dup")
    await bus.ensure_topics([topic])  # (a service's runtime creates its catalog's topics)
    catalog = catalog_with_ping(topic)
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog)
    relay = OutboxRelay(db=producer_db, outbox=outbox, bus=bus)
    lead = uuid.uuid4()
    async with producer_db.transaction() as session:
        await outbox.add(session, Ping(lead_id=lead, n=1), subject=str(lead))
    async with producer_db.transaction() as session:  # a relay that died before deleting
        rows = (await session.execute(select(outbox_tables[0]))).all()
    await relay.relay_once()
    await producer_db_reinsert(producer_db, rows)
    await relay.relay_once()
    duplicates: list[str] = []

    async def on_duplicate(envelope: object) -> None:
        duplicates.append(str(getattr(envelope, "id", "")))

    consumer = ping_consumer(
        bus,
        consumer_db,
        catalog,
        group=unique("g"),
        hooks=ConsumerHooks(on_duplicate=on_duplicate),
    )
    task = asyncio.create_task(consumer.run())

    async def duplicate_seen() -> bool:
        return len(duplicates) == 1

    await eventually(duplicate_seen, timeout=60)
    consumer.stop()
    await asyncio.wait_for(task, timeout=30)
    assert await count_effects(consumer_db, lead_id=str(lead)) == 1


async def producer_db_reinsert(db: Database, rows: list[object]) -> None:
    async with db.transaction() as session:
        for row in rows:
            await session.execute(insert(outbox_tables[0]).values(**row._mapping))  # type: ignore[attr-defined]


async def test_large_batches_split_across_sqlite_statements_keep_their_answers(
    databases: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite takes a limited number of parameters per statement: a batch above it is
    written in several statements, with the same numbering and the same inbox answers."""
    producer_db, consumer_db = databases
    monkeypatch.setattr(shared.bulk_writes, "SQLITE_MAX_VARIABLES", 7)  # 3 subjects, 5 inbox ids
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    leads = [uuid.uuid4() for _ in range(8)]
    events = await numbered(producer_db, outbox, [leads, leads[:5]])
    assert [e.subject for e in events] == [str(lead) for lead in leads + leads[:5]]
    assert [e.sequence for e in events] == expected_sequences(
        producer_db, events, [1] * len(leads) + [2] * 5
    )

    inbox = Inbox(inbox_table)
    ids = [f"event-{n}" for n in range(9)]
    async with consumer_db.transaction() as session:
        first = await inbox.claim(session, group="g", event_ids=ids[:5] + ids[:2])
    async with consumer_db.transaction() as session:
        second = await inbox.claim(session, group="g", event_ids=ids)
    async with consumer_db.transaction() as session:
        other_group = await inbox.claim(session, group="h", event_ids=ids[:3])
    assert (first, second, other_group) == (set(ids[:5]), set(ids[5:]), set(ids[:3]))


async def test_the_events_of_one_transaction_carry_one_time(
    databases: tuple[Database, Database],
) -> None:
    producer_db, _ = databases
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    for _ in range(2):  # two transactions
        async with producer_db.transaction() as session:
            for n in range(3):
                await outbox.add(session, Ping(lead_id=uuid.uuid4(), n=n), subject=f"lead-{n}")
                await asyncio.sleep(0.002)  # (so that two clock readings would differ)
    times = [headers["ce_time"] for _id, headers in await relayed(producer_db, outbox)]

    assert len(times) == 6
    assert len(set(times[:3])) == 1 and len(set(times[3:])) == 1
    assert times[0] < times[3]


class Note(Payload):
    """A test event with text that JSON must escape and a time."""

    text: str
    at: datetime


async def test_an_event_is_stored_as_its_payloads_json_with_the_transactions_one_write_time(
    databases: tuple[Database, Database],
) -> None:
    producer_db, _ = databases
    catalog = CATALOG.extended(EventType("handoff.test.note.v1", Note, "t", "A note.", "test"))
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog)
    notes = [
        Note(lead_id=uuid.uuid4(), text=text, at=datetime(2026, 11, 24, 6, 30, tzinfo=UTC))
        for text in ('Zoë "Ops" \\ Müller \u2028 😀', "plain", "")
    ]
    async with producer_db.transaction() as session:
        for note in notes:
            await outbox.add(session, note, subject=str(note.lead_id))
    async with producer_db.engine.connect() as conn:
        rows = (await conn.execute(select(outbox_tables[0]).order_by(outbox_tables[0].c.id))).all()

    assert [bytes(row.value) for row in rows] == [n.model_dump_json().encode() for n in notes]
    assert [Note.model_validate_json(row.value) for row in rows] == notes
    assert len({row.created_at for row in rows}) == 1 and rows[0].created_at is not None


async def test_a_new_subject_is_numbered_from_one_and_its_counter_goes_on(
    databases: tuple[Database, Database],
) -> None:
    """Events of a subject the transaction creates are numbered without reading a counter
    (SQLite); every event of that subject in the transaction goes that way, and later
    transactions number on from its counter. PostgreSQL numbers them by id all the same."""
    producer_db, _ = databases
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    new, old = uuid.uuid4(), uuid.uuid4()
    await numbered(producer_db, outbox, [(old,)])  # `old` has one event already
    async with producer_db.transaction() as session:
        for lead, flag in ((new, True), (old, False), (new, False), (old, False)):
            await outbox.add(session, Ping(lead_id=lead, n=0), subject=str(lead), new_subject=flag)
    events = await numbered(producer_db, outbox, [(new, old)])

    assert [e.subject for e in events] == [str(s) for s in (old, new, old, new, old, new, old)]
    assert [e.sequence for e in events] == expected_sequences(
        producer_db, events, [1, 1, 2, 2, 3, 3, 4]
    )
    assert increasing_per_subject(events)


@pytest.mark.parametrize("databases", ["sqlite"], indirect=True)
async def test_a_subject_said_new_that_has_events_fails_the_transaction_on_sqlite(
    databases: tuple[Database, Database],
) -> None:
    """(PostgreSQL numbers events by id and keeps no counter to find.)"""
    producer_db, _ = databases
    outbox = Outbox(service="producer", tables=outbox_tables, catalog=catalog_with_ping("t"))
    lead = uuid.uuid4()
    await numbered(producer_db, outbox, [(lead,)])

    with pytest.raises(IntegrityError):
        async with producer_db.transaction() as session:
            await outbox.add(session, Ping(lead_id=lead, n=1), subject=str(lead), new_subject=True)
    assert await outbox_rows(producer_db) == 1  # nothing of it was written


class RecordingInbox(Inbox):
    """An inbox that logs each claim, (unseen, how many ids it took for new), and each
    failed unit of work it recognised as a claim that met an id seen before."""

    def __init__(self) -> None:
        super().__init__(inbox_table)
        self.claims: list[tuple[bool, object]] = []

    async def claim(
        self, session: AsyncSession, *, group: str, event_ids: Sequence[str], unseen: bool = False
    ) -> set[str]:
        fresh = await super().claim(session, group=group, event_ids=event_ids, unseen=unseen)
        self.claims.append((unseen, len(fresh)))
        return fresh

    def seen_before(self, error: BaseException) -> bool:
        seen = super().seen_before(error)
        if seen:
            self.claims.append((True, "seen before"))
        return seen


async def stage_effect(ctx: HandlerContext, payload: Ping) -> None:
    ctx.stage(effects, event_id=ctx.event_id, lead_id=str(payload.lead_id), n=payload.n)


@pytest.mark.parametrize("handler", [record_effect, stage_effect], ids=["execute", "stage"])
async def test_a_batch_with_events_applied_before_applies_only_the_new_ones(
    databases: tuple[Database, Database], tmp_path: Path, handler: Handler
) -> None:
    """A redelivered batch (a crash before the offset commit) with new events behind it.

    On PostgreSQL a batch is first applied as if all its events were new, and again with
    the inbox's check when one of them was seen before; SQLite always checks. (A handler
    that only stages rows makes the batch one statement, sent without BEGIN and COMMIT.)"""
    _, consumer_db = databases
    catalog = catalog_with_ping("t.redelivered")
    records = ping_records(catalog, "t.redelivered", uuid.uuid4(), 6)
    duplicates: list[str] = []

    async def on_duplicate(envelope: Envelope) -> None:
        duplicates.append(str(envelope.id))

    inbox = RecordingInbox()
    consumer = EventConsumer(
        service="consumer",
        group=unique("g"),
        bus=LocalBus(tmp_path / "unused.db"),  # nothing to dead-letter
        db=consumer_db,
        inbox=inbox,
        catalog=catalog,
        handlers={Ping: [handler]},
        hooks=ConsumerHooks(on_duplicate=on_duplicate),
    )

    await consumer.process(records[:4])
    await consumer.process(records[2:])  # 2 and 3 again, then 4 and 5

    assert sorted(await effect_ns(consumer_db)) == [0, 1, 2, 3, 4, 5]
    assert len(duplicates) == 2
    if consumer_db.is_postgres:  # (the unchecked claim fails as its batch commits)
        assert inbox.claims == [(True, 4), (True, 4), (True, "seen before"), (False, 2)]
    else:
        assert inbox.claims == [(False, 4), (False, 2)]


async def test_an_unchecked_claim_takes_only_a_repeated_id_for_seen_before(
    postgres_url: str,
) -> None:
    db = Database(postgres_url)
    await create_schema(db)
    inbox = Inbox(inbox_table)
    try:
        async with db.transaction() as session:
            fresh = await inbox.claim(session, group="g", event_ids=["a", "b", "a"], unseen=True)
        assert fresh == {"a", "b"}
        with pytest.raises(IntegrityError) as seen:  # as the unit of work commits
            async with db.transaction() as session:
                await inbox.claim(session, group="g", event_ids=["c", "b"], unseen=True)
        assert inbox.seen_before(seen.value)
        with pytest.raises(IntegrityError) as other:  # another violation stays what it is
            async with db.transaction() as session:
                await inbox.claim(session, group=None, event_ids=["d"], unseen=True)  # type: ignore[arg-type]
        assert not inbox.seen_before(other.value)
        with pytest.raises(IntegrityError) as elsewhere:  # a key of another table
            async with db.transaction() as session:
                await inbox.claim(session, group="g", event_ids=["e"], unseen=True)
                row = {"id": 1, "event_id": "e", "lead_id": "x", "n": 1}
                shared.bulk_writes.stage_insert(session, effects, row)
                shared.bulk_writes.stage_insert(session, effects, dict(row))
        assert not inbox.seen_before(elsewhere.value)
        assert not inbox.seen_before(ValueError("not a database error"))
        async with db.transaction() as session:  # nothing of the failed claims was kept
            fresh = await inbox.claim(session, group="g", event_ids=["b", "c", "d"])
        assert fresh == {"c", "d"}
    finally:
        await db.dispose()
