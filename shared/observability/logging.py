"""Structured logs: JSON lines carrying lead id, event id and trace id when known."""

from __future__ import annotations

import logging
import sys

import structlog

from shared.observability.tracing import trace_id_of

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(*, level: str = "info", json: bool = True) -> None:
    """Set up structlog (and stdlib logging through it) once at process start.

    Args:
        level: minimum level name.
        json: JSON lines (production) or coloured console lines (a person at a terminal).
    """
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared_processors, structlog.processors.format_exc_info, renderer]
        if json
        else [*shared_processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=_LEVELS[level], stream=sys.stderr, format="%(message)s")
    for noisy in ("aiokafka", "kafka", "alembic"):
        logging.getLogger(noisy).setLevel(max(_LEVELS[level], logging.WARNING))


def bind_event_context(*, event_id: str, lead_id: str | None, traceparent: str | None) -> None:
    """Put an event's ids on every log line until `clear_event_context()`."""
    structlog.contextvars.bind_contextvars(
        event_id=event_id,
        lead_id=lead_id,
        trace_id=trace_id_of(traceparent),
    )


def clear_event_context() -> None:
    structlog.contextvars.unbind_contextvars("event_id", "lead_id", "trace_id")
