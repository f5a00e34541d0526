"""W3C trace context: one trace id from the HTTP request through every event it causes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from shared.ids import random_bits

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_NO_TRACE = "0" * 32  # the all-zero trace id, which W3C trace context forbids


class Span:
    """A handler's place in the trace of the event it handles: `continue_trace(incoming)`,
    made when first asked for (most handlers emit nothing, and drawing ids for every event
    cost more than the rest of running its handler)."""

    __slots__ = ("_traceparent", "incoming")

    def __init__(self, incoming: str | None) -> None:
        self.incoming = incoming
        self._traceparent: str | None = None

    @property
    def traceparent(self) -> str:
        if self._traceparent is None:
            self._traceparent = continue_trace(self.incoming)
        return self._traceparent


# What events made now carry: a request's traceparent, or the span of the event being handled.
current_traceparent: ContextVar[str | Span | None] = ContextVar("traceparent", default=None)


def current_trace() -> str | None:
    """The traceparent events made now carry (None outside a request or a handler)."""
    value = current_traceparent.get()
    return value.traceparent if isinstance(value, Span) else value


_SPAN_BITS = (1 << 64) - 1


def new_traceparent() -> str:
    """The start of a new trace: a trace id and a span id, neither all zeros (W3C trace
    context forbids both), drawn at once (a consumer starts one per event that came
    without a trace)."""
    while True:
        ids = random_bits(192)
        if ids >> 64 and ids & _SPAN_BITS:
            return f"00-{ids >> 64:032x}-{ids & _SPAN_BITS:016x}-01"


def continue_trace(traceparent: str | None) -> str:
    """A new span in the caller's trace, or a new trace if the header is missing or invalid."""
    if traceparent and _TRACEPARENT.match(traceparent) and traceparent[3:35] != _NO_TRACE:
        while not (span := random_bits(64)):
            pass
        return f"00-{traceparent[3:35]}-{span:016x}-{traceparent[53:55]}"
    return new_traceparent()


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a valid `traceparent` (None for any other, as for the all-zero id)."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent)
    return match.group(1) if match and match.group(1) != _NO_TRACE else None


@contextmanager
def traced(traceparent: str | None) -> Iterator[None]:
    """Within: events are made in the trace of `traceparent` (None: the current one), as
    when a batch applies what several requests sent, each in its own trace."""
    if traceparent is None:
        yield
        return
    token = current_traceparent.set(traceparent)
    try:
        yield
    finally:
        current_traceparent.reset(token)
