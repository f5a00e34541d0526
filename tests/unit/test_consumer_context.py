"""A handler runs with its event's ids on every log line and in the event's trace."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import structlog

from shared.bus.port import Record
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events.codec import build_envelope, to_binary
from shared.handler_context import HandlerContext
from shared.inbox import Inbox
from shared.observability.tracing import current_trace, current_traceparent, trace_id_of
from tests.support import Ping, catalog_with_ping, create_schema, inbox_table

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def record(catalog: Any, lead: uuid.UUID, n: int, traceparent: str | None) -> Record:
    envelope = build_envelope(
        catalog,
        Ping(lead_id=lead, n=n),
        source_service="test",
        subject=str(lead),
        sequence=n + 1,
        traceparent=traceparent,
    )
    key, headers, value = to_binary(envelope)
    return Record("t", 0, n, key, value, tuple(headers))


async def test_handlers_see_the_event_ids_and_trace_and_the_outer_context_comes_back(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await create_schema(db)
    catalog = catalog_with_ping("t")
    seen: list[tuple[dict[str, Any], str | None, str]] = []

    async def handler(ctx: HandlerContext, payload: Ping) -> None:
        assert ctx.event_id == str(ctx.envelope.id)
        seen.append(
            (
                structlog.contextvars.get_contextvars(),
                current_trace(),
                ctx.event_id,
            )
        )

    consumer = EventConsumer(
        service="c",
        group="g",
        bus=None,  # type: ignore[arg-type]  # process() publishes only dead letters
        db=db,
        inbox=Inbox(inbox_table),
        catalog=catalog,
        handlers={Ping: [handler]},
    )
    lead = uuid.uuid4()
    structlog.contextvars.bind_contextvars(event_id="outer", request="r1")
    try:
        await consumer.process([record(catalog, lead, 0, CALLER), record(catalog, lead, 1, None)])
        after = structlog.contextvars.get_contextvars()
    finally:
        structlog.contextvars.clear_contextvars()
    await db.dispose()

    (traced, traceparent, first_id), (untraced, new_trace, second_id) = seen
    assert traced["event_id"] == first_id and traced["lead_id"] == str(lead)
    assert traced["trace_id"] == trace_id_of(CALLER) == trace_id_of(traceparent)
    assert traceparent != CALLER  # a new span in the caller's trace
    assert traced["request"] == "r1"
    assert untraced["event_id"] == second_id and untraced["trace_id"] is None
    assert trace_id_of(new_trace) not in (None, trace_id_of(CALLER))
    assert after == {"event_id": "outer", "request": "r1"}
    assert current_traceparent.get() is None
