"""A handler runs with its event's ids on every log line and in the event's trace."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import LogCapture

from shared.bus.port import Record
from shared.consumer import EventConsumer
from shared.db import Database
from shared.events.codec import build_envelope, to_binary
from shared.handler_context import HandlerContext
from shared.inbox import Inbox
from shared.observability.logging import add_event_context, configure_logging
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


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """The entries logged, as the services' processors (`configure_logging`) make them, the
    renderer swapped for a capture."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(level="info", json=True)
    processors = structlog.get_config()["processors"]
    assert processors.index(add_event_context) < processors.index(merge_contextvars)
    capture = LogCapture()
    structlog.configure(processors=[*processors[:-1], capture])
    yield capture.entries
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


async def test_handlers_log_with_the_event_ids_and_trace_and_the_outer_context_comes_back(
    tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await create_schema(db)
    catalog = catalog_with_ping("t")
    seen: list[tuple[str | None, str]] = []
    log = structlog.get_logger("handler")

    async def handler(ctx: HandlerContext, payload: Ping) -> None:
        assert ctx.event_id == str(ctx.envelope.id)
        log.info("handled", n=payload.n)
        log.info("handled, its own lead id", lead_id="given")
        seen.append((current_trace(), ctx.event_id))

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
    structlog.contextvars.bind_contextvars(event_id="outer", trace_id="outer-trace", request="r1")
    await consumer.process([record(catalog, lead, 0, CALLER), record(catalog, lead, 1, None)])
    log.info("after")
    await db.dispose()

    (traceparent, first_id), (new_trace, second_id) = seen
    traced, given, untraced, _given, after = logged
    assert (traced["event"], traced["n"]) == ("handled", 0)
    assert traced["event_id"] == first_id and traced["lead_id"] == str(lead)
    assert traced["trace_id"] == trace_id_of(CALLER) == trace_id_of(traceparent)
    assert traceparent != CALLER  # a new span in the caller's trace
    assert traced["request"] == "r1"  # what was bound outside and not the event's: kept
    assert (given["lead_id"], given["event_id"]) == ("given", first_id)  # the call's own: kept
    assert (untraced["n"], untraced["event_id"], untraced["trace_id"]) == (1, second_id, None)
    assert trace_id_of(new_trace) not in (None, trace_id_of(CALLER))
    assert after["event"] == "after" and "lead_id" not in after
    assert (after["event_id"], after["trace_id"], after["request"]) == (
        "outer",
        "outer-trace",
        "r1",
    )
    assert current_traceparent.get() is None
