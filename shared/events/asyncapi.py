"""The event catalog as an AsyncAPI 3.0 document, generated from the payload models."""

from __future__ import annotations

from typing import Any

from shared.events.catalog import EventCatalog, EventType

_CE_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0, Kafka protocol binding, binary content mode.",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time"],
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "format": "uuid"},
        "ce_source": {"type": "string", "examples": ["/handoff/intake"]},
        "ce_type": {"type": "string", "examples": ["handoff.lead.captured.v1"]},
        "ce_subject": {"type": "string", "description": "The lead id."},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_partitionkey": {"type": "string", "description": "The lead id (= message key)."},
        "ce_sequence": {
            "type": "string",
            "description": "Per-lead, per-source number that grows with every event the "
            "source emits about the lead (with gaps: PostgreSQL numbers events by their outbox "
            "row id; the embedded mode counts 1, 2, 3...), zero-padded to 12 digits so that it "
            "orders as text. Compare two from one source to drop a stale update.",
        },
        "ce_traceparent": {"type": "string", "description": "W3C trace context."},
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def asyncapi_document(catalog: EventCatalog, *, version: str) -> dict[str, Any]:
    """Channels (topics), messages (event types) and who sends them."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event_type in catalog:
        message_id = _message_id(event_type)
        schema = event_type.model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[message_id] = schema
        messages[message_id] = _message(event_type, message_id)
        channel_id = event_type.topic.replace(".", "_")
        channel = channels.setdefault(channel_id, {"address": event_type.topic, "messages": {}})
        channel["messages"][message_id] = {"$ref": f"#/components/messages/{message_id}"}
        operation = operations.setdefault(
            f"{event_type.producer}_sends_{channel_id}", _send_operation(event_type, channel_id)
        )
        operation["messages"].append({"$ref": f"#/channels/{channel_id}/messages/{message_id}"})
    return {
        "asyncapi": "3.0.0",
        "info": _info(version),
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _message(event_type: EventType, message_id: str) -> dict[str, Any]:
    """An event type as an AsyncAPI message: CloudEvents headers, its payload's schema."""
    return {
        "name": event_type.name,
        "title": event_type.model.__name__,
        "summary": event_type.summary,
        "contentType": "application/json",
        "headers": _CE_HEADERS,
        "payload": {"$ref": f"#/components/schemas/{message_id}"},
        "bindings": {"kafka": {"key": {"type": "string", "description": "The lead id."}}},
    }


def _send_operation(event_type: EventType, channel_id: str) -> dict[str, Any]:
    """The producer's send to the event type's channel, its messages still to be listed."""
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "summary": f"{event_type.producer} publishes to {event_type.topic}",
        "messages": [],
    }


def _info(version: str) -> dict[str, Any]:
    return {
        "title": "handoff events",
        "version": version,
        "description": "Every event handoff's services publish. Payloads are versioned: "
        "a new field is optional, a breaking change is a new type version.",
    }


def _message_id(event_type: EventType) -> str:
    return event_type.name.removeprefix("handoff.").replace(".", "_")
