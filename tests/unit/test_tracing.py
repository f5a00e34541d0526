"""One trace id follows a lead from the HTTP request through every event it causes."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from shared.db import Database
from shared.events.codec import OutboxHeaders
from shared.observability import tracing
from shared.observability.tracing import (
    Span,
    continue_trace,
    current_trace,
    current_traceparent,
    new_traceparent,
    trace_id_of,
)
from shared.outbox import Outbox
from shared.outbox_relay import CLAIMED, outbox_messages
from tests.support import Ping, catalog_with_ping, create_schema, outbox_tables

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_caller_trace_is_continued_with_a_new_span() -> None:
    child = continue_trace(CALLER)
    assert trace_id_of(child) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child != CALLER


def test_a_missing_or_invalid_trace_starts_a_new_one() -> None:
    for header in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"):
        assert trace_id_of(continue_trace(header)) not in (None, "0" * 32)


def test_new_traces_are_w3c_traceparents_and_distinct() -> None:
    made = [new_traceparent() for _ in range(1000)] + [continue_trace(CALLER) for _ in range(1000)]
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", t) for t in made)
    assert len(set(made)) == len(made)


def test_an_all_zero_trace_or_span_id_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """W3C trace context forbids all-zero ids: a draw that makes one is not used."""
    span, trace = 0x00F067AA0BA902B7, 0x4BF92F3577B34DA6A3CE929D0E0E4736
    # a new trace: all-zero trace id, all-zero span id, then both; a new span: zero, then one
    draws = iter([span, trace << 64, trace << 64 | span, 0, span])
    monkeypatch.setattr(tracing, "random_bits", lambda _bits: next(draws))
    assert new_traceparent() == f"00-{trace:032x}-{span:016x}-01"
    assert continue_trace(CALLER) == f"00-{CALLER[3:35]}-{span:016x}-01"


def test_a_span_draws_its_ids_only_when_asked_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []

    def drawn(bits: int) -> int:
        draws.append(bits)
        return 0x00F067AA0BA902B7

    monkeypatch.setattr(tracing, "random_bits", drawn)
    span = Span(CALLER)
    token = current_traceparent.set(span)
    try:
        assert draws == []  # a handler that emits nothing costs no ids
        assert current_trace() == span.traceparent == f"00-{CALLER[3:35]}-00f067aa0ba902b7-01"
        assert current_trace() == span.traceparent
    finally:
        current_traceparent.reset(token)
    assert draws == [64]
    assert current_trace() is None


async def test_events_added_during_a_traced_request_carry_its_trace(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await create_schema(db)
    outbox = Outbox(service="p", tables=outbox_tables, catalog=catalog_with_ping("t"))
    lead = uuid.uuid4()
    token = current_traceparent.set(continue_trace(CALLER))
    try:
        async with db.transaction() as session:
            await outbox.add(session, Ping(lead_id=lead, n=1), subject=str(lead))
    finally:
        current_traceparent.reset(token)
    table = outbox_tables[0]
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(*(table.c[c] for c in CLAIMED)))).all()
    await db.dispose()
    (message,) = outbox_messages(OutboxHeaders(outbox.source), rows)  # as the relay sends it
    headers = {name: value.decode() for name, value in message.headers}
    assert trace_id_of(headers["ce_traceparent"]) == trace_id_of(CALLER)
