"""Dead letters: records a consumer group cannot apply, sent to the group's dead-letter
topic with the original value and headers, and why (`dlq_*` headers), and logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from shared.bus.port import Bus, OutgoingMessage, Record
from shared.events.catalog import dead_letter_topic
from shared.events.envelope import Envelope
from shared.observability import metrics
from shared.observability.tracing import trace_id_of

log = structlog.get_logger(__name__)


class DeadLetter(Protocol):
    """A record that cannot be applied: its envelope (None if it could not be decoded),
    its event id as text ("" if unknown) and the error."""

    @property
    def record(self) -> Record: ...
    @property
    def envelope(self) -> Envelope | None: ...
    @property
    def event_id(self) -> str: ...
    @property
    def error(self) -> str | None: ...


async def dead_letter(bus: Bus, *, service: str, group: str, letters: Sequence[DeadLetter]) -> None:
    """Send `letters` to `group`'s dead-letter topic (one publish), logging and counting each."""
    topic = dead_letter_topic(group)
    messages = []
    for item in letters:
        r = item.record
        envelope = item.envelope  # None: the record could not be decoded
        log.error(
            "event dead-lettered",
            group=group,
            event_id=item.event_id or r.header("ce_id"),
            lead_id=envelope.subject if envelope else r.header("ce_subject") or r.key,
            trace_id=trace_id_of(envelope.traceparent if envelope else r.header("ce_traceparent")),
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            error=item.error,
        )
        metrics.EVENTS_CONSUMED.labels(
            service, group, r.header("ce_type") or "unknown", "dead_lettered"
        ).inc()
        headers = [
            *r.headers,
            ("dlq_error", (item.error or "").encode()),
            ("dlq_group", group.encode()),
            ("dlq_topic", r.topic.encode()),
            ("dlq_partition", str(r.partition).encode()),
            ("dlq_offset", str(r.offset).encode()),
        ]
        messages.append(
            OutgoingMessage(topic=topic, key=r.key or "", value=r.value, headers=headers)
        )
    await bus.publish(messages)
