"""CloudEvents Kafka protocol binding, binary content mode, and structured JSON mode."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel

from shared.events.catalog import EventCatalog
from shared.events.envelope import JSON, SPEC_VERSION, Envelope, new_event_id, utcnow

Headers = Sequence[tuple[str, bytes]]
CONTENT_TYPE = "content-type"
_ATTRS = (
    "id",
    "specversion",
    "source",
    "type",
    "subject",
    "time",
    "partitionkey",
    "traceparent",
    "sequence",
)
_HEADER_ATTRS = {f"ce_{attr}": attr for attr in _ATTRS}


# `ce_sequence` as text: zero-padded, so that comparing two as strings (as the CloudEvents
# sequence extension asks: "lexicographically-orderable") orders them as numbers.
SEQUENCE_DIGITS = 12


def sequence_text(sequence: int) -> str:
    """A sequence number as its `ce_sequence` header: "000000000042"."""
    return _SEQUENCE_FORMAT % sequence


_SEQUENCE_FORMAT = f"%0{SEQUENCE_DIGITS}d"  # (made once: one per event written)


class MalformedEvent(ValueError):
    """The bytes on the wire are not a valid handoff CloudEvent."""


def header_pairs(
    *,
    event_id: uuid.UUID | str,
    source: str,
    event_type: str,
    subject: str,
    time: datetime,
    sequence: int,
    traceparent: str | None,
    content_type: str = JSON,
) -> list[tuple[str, str]]:
    """The `ce_*` headers of the Kafka binary binding, as text (the partition key is the
    subject: a lead's events share a partition). `event_id` may be given as its text."""
    text = time.isoformat()
    return _pairs(
        str(event_id), source, event_type, subject, text, sequence, traceparent, content_type
    )


def _pairs(
    event_id: str,
    source: str,
    event_type: str,
    subject: str,
    time: str,
    sequence: int,
    traceparent: str | None,
    content_type: str = JSON,
) -> list[tuple[str, str]]:
    pairs = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", event_id),
        ("ce_source", source),
        ("ce_type", event_type),
        ("ce_subject", subject),
        ("ce_time", time),
        ("ce_partitionkey", subject),
        ("ce_sequence", sequence_text(sequence)),
        (CONTENT_TYPE, content_type),
    ]
    if traceparent:
        pairs.append(("ce_traceparent", traceparent))
    return pairs


class OutboxHeaders:
    """The `ce_*` headers of outbox rows of one source, as the bus sends them: the pairs of
    `header_pairs`, made from a row's columns as the relay publishes it.

    The pairs every event shares are made once, an event type's and a time's once each (a
    relay's batch holds few of either: a transaction's events share their time), so an
    event costs the pairs that are its own (~0.3 µs an event; parsing stored JSON headers
    cost ~2).
    """

    def __init__(self, source: str) -> None:
        self._specversion = ("ce_specversion", SPEC_VERSION.encode())
        self._source = ("ce_source", source.encode())
        self._content_type = (CONTENT_TYPE, JSON.encode())
        self._types: dict[str, tuple[str, bytes]] = {}
        self._times: dict[str, tuple[str, bytes]] = {}

    def pairs(
        self,
        event_id: str,
        event_type: str,
        subject: str,
        time: str,
        sequence: int,
        traceparent: str | None,
    ) -> list[tuple[str, bytes]]:
        """An event's headers (`time` as ISO 8601 text), in `header_pairs`'s order."""
        type_pair = self._types.get(event_type)
        if type_pair is None:
            if len(self._types) >= 1024:
                self._types.clear()
            type_pair = self._types[event_type] = ("ce_type", event_type.encode())
        time_pair = self._times.get(time)
        if time_pair is None:
            if len(self._times) >= 1024:  # (bounded: times only ever grow)
                self._times.clear()
            time_pair = self._times[time] = ("ce_time", time.encode())
        key = subject.encode()
        pairs = [
            self._specversion,
            ("ce_id", event_id.encode()),
            self._source,
            type_pair,
            ("ce_subject", key),
            time_pair,
            ("ce_partitionkey", key),
            ("ce_sequence", (_SEQUENCE_FORMAT % sequence).encode()),
            self._content_type,
        ]
        if traceparent:
            pairs.append(("ce_traceparent", traceparent.encode()))
        return pairs


def to_binary(envelope: Envelope) -> tuple[str, list[tuple[str, bytes]], bytes]:
    """Kafka key, `ce_*` headers and JSON value for an envelope (binary content mode)."""
    pairs = header_pairs(
        event_id=envelope.id,
        source=envelope.source,
        event_type=envelope.type,
        subject=envelope.subject,
        time=envelope.time,
        sequence=envelope.sequence,
        traceparent=envelope.traceparent,
        content_type=envelope.datacontenttype,
    )
    headers = [(name, value.encode()) for name, value in pairs]
    return envelope.partitionkey, headers, orjson.dumps(envelope.data)


def from_binary(headers: Headers, value: bytes) -> Envelope:
    """Parse a binary-mode Kafka record back into an envelope.

    Only `ce_*` headers and `content-type` are read. The required attributes (`id`,
    `specversion`, `source`, `type`, `subject`) must be there and not empty; `id` must be
    a UUID, in any spelling `uuid.UUID` reads (it is kept as canonical text); `time`, when
    given, an ISO 8601 timestamp (taken as UTC without an offset; the time of reading
    when missing); `sequence` a positive decimal number (1 when missing); the content type
    JSON and the value a JSON object.

    Raises:
        MalformedEvent: naming the attribute and what is wrong with it.
    """
    attrs: dict[str, str] = {}
    content_type = JSON
    for name, raw in headers:
        attr = _HEADER_ATTRS.get(name)
        if attr is not None:
            attrs[attr] = raw.decode("utf-8", "replace")
        elif name == CONTENT_TYPE:
            content_type = raw.decode("utf-8", "replace")
    if not attrs.keys() >= _REQUIRED:
        missing = [a for a in _REQUIRED_ORDER if a not in attrs]
        raise MalformedEvent(
            f"missing CloudEvents header(s): {', '.join('ce_' + m for m in missing)}"
        )
    if attrs["specversion"] != SPEC_VERSION:
        raise MalformedEvent(
            f"unsupported CloudEvents specversion {attrs['specversion']!r}: expected {SPEC_VERSION}"
        )
    if content_type != JSON and content_type.split(";", 1)[0].strip().lower() != JSON:
        raise MalformedEvent(f"unsupported content-type {content_type!r}: expected {JSON}")
    source, event_type, subject = attrs["source"], attrs["type"], attrs["subject"]
    if not (source and event_type and subject):
        empty = [a for a in ("source", "type", "subject") if not attrs[a]]
        raise MalformedEvent(f"empty CloudEvents header(s): {', '.join('ce_' + a for a in empty)}")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"event data is not JSON: {exc}") from None
    if type(data) is not dict:
        raise MalformedEvent("event data must be a JSON object")
    time = attrs.get("time")
    sequence = attrs.get("sequence")
    return Envelope(
        id=_event_id(attrs["id"]),
        source=source,
        type=event_type,
        subject=subject,
        time=utcnow() if time is None else _timestamp(time),
        partitionkey=attrs.get("partitionkey", subject),
        sequence=1 if sequence is None else _sequence(sequence),
        data=data,
        datacontenttype=content_type,
        traceparent=attrs.get("traceparent"),
    )


_REQUIRED_ORDER = ("specversion", "id", "source", "type", "subject")
_REQUIRED = frozenset(_REQUIRED_ORDER)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _event_id(text: str) -> str:
    """An event id as canonical UUID text: the header itself when written so (as handoff
    writes it: checking costs a fraction of parsing it), otherwise parsed and rewritten."""
    if _CANONICAL_UUID.fullmatch(text):
        return text
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise MalformedEvent(f"invalid CloudEvents attribute ce_id {text!r}: not a UUID") from None


def _timestamp(text: str) -> datetime:
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEvent(
            f"invalid CloudEvents attribute ce_time {text!r}: not an ISO 8601 timestamp"
        ) from None
    return time if time.tzinfo is not None else time.replace(tzinfo=UTC)


def _sequence(text: str) -> int:
    if text.isascii() and text.isdigit() and (sequence := int(text)) >= 1:
        return sequence
    raise MalformedEvent(
        f"invalid CloudEvents attribute ce_sequence {text!r}: not a positive decimal number"
    )


def to_structured(envelope: Envelope) -> bytes:
    """`application/cloudevents+json` body (structured content mode, for HTTP): every
    attribute (a missing traceparent left out) and the data."""
    body = asdict(envelope)
    if body["traceparent"] is None:
        del body["traceparent"]
    return orjson.dumps(body)


def build_envelope(
    catalog: EventCatalog,
    payload: BaseModel,
    *,
    source_service: str,
    subject: str,
    sequence: int,
    traceparent: str | None = None,
    event_id: uuid.UUID | str | None = None,
    time: datetime | None = None,
) -> Envelope:
    """Wrap a payload in its envelope, type and topic taken from the catalog."""
    event_type = catalog.for_payload(payload)
    return Envelope(
        id=str(event_id) if event_id else new_event_id(),
        source=f"/handoff/{source_service}",
        type=event_type.name,
        subject=subject,
        time=time or utcnow(),
        partitionkey=subject,
        traceparent=traceparent,
        sequence=sequence,
        data=payload.model_dump(mode="json"),
    )


def decode_payload(catalog: EventCatalog, envelope: Envelope) -> BaseModel:
    """Validate an envelope's data against its registered payload model."""
    model = catalog.by_name(envelope.type).model
    try:
        payload: BaseModel = model.__pydantic_validator__.validate_python(envelope.data)
        return payload
    except ValueError as exc:
        raise MalformedEvent(f"{envelope.type} data invalid: {exc}") from None
