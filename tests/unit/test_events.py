"""Event contracts: the envelope, the Kafka binary binding and the catalog."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest
from cloudevents.v1.kafka import KafkaMessage
from cloudevents.v1.kafka import from_binary as sdk_from_binary

from shared.events.catalog import CATALOG, Topics, UnknownEventType
from shared.events.codec import (
    MalformedEvent,
    build_envelope,
    decode_payload,
    from_binary,
    to_binary,
    to_structured,
)
from shared.events.payloads import Actor, LeadStageChanged, Reason


def stage_changed() -> LeadStageChanged:
    return LeadStageChanged(
        lead_id=uuid.uuid4(),
        from_stage="lead",
        to_stage="mql",
        actor=Actor(kind="system", id="scoring"),
        reason=Reason(code="score_threshold", text="score 72 >= 60"),
        model_version="2026-11",
    )


def test_an_envelope_survives_the_kafka_binary_binding_unchanged() -> None:
    payload = stage_changed()
    envelope = build_envelope(
        CATALOG,
        payload,
        source_service="qualification",
        subject=str(payload.lead_id),
        sequence=3,
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    key, headers, value = to_binary(envelope)

    assert key == str(payload.lead_id)
    assert from_binary(headers, value) == envelope
    assert decode_payload(CATALOG, envelope) == payload


def test_the_binary_binding_is_readable_by_the_cloudevents_sdk() -> None:
    payload = stage_changed()
    envelope = build_envelope(
        CATALOG, payload, source_service="qualification", subject=str(payload.lead_id), sequence=1
    )
    key, headers, value = to_binary(envelope)

    event = sdk_from_binary(KafkaMessage(headers=dict(headers), key=key.encode(), value=value))

    assert event["type"] == "handoff.lead.stage_changed.v1"
    assert event["source"] == "/handoff/qualification"
    assert event["subject"] == str(payload.lead_id)
    assert event["partitionkey"] == str(payload.lead_id).encode()  # the SDK maps it from the key
    assert event.data["to_stage"] == "mql"


def test_structured_mode_carries_every_attribute_in_the_body() -> None:
    payload = stage_changed()
    envelope = build_envelope(
        CATALOG, payload, source_service="qualification", subject=str(payload.lead_id), sequence=9
    )
    body = to_structured(envelope)
    assert b'"specversion":"1.0"' in body
    assert b'"sequence":9' in body
    assert b'"data":{' in body


def test_a_record_without_the_required_headers_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="ce_id"):
        from_binary([("ce_type", b"handoff.lead.captured.v1")], b"{}")


def test_a_record_whose_value_is_not_a_json_object_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="JSON object"):
        from_binary(MINIMAL_HEADERS, b"[1, 2]")


MINIMAL_HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", str(uuid.uuid4()).encode()),
    ("ce_source", b"/handoff/x"),
    ("ce_type", b"t"),
    ("ce_subject", b"s"),
]


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        (MINIMAL_HEADERS[1:], "missing CloudEvents header.s.: ce_specversion"),
        ([("ce_specversion", b"0.3"), *MINIMAL_HEADERS[1:]], "unsupported CloudEvents specversion"),
    ],
)
def test_a_record_of_another_cloudevents_version_is_malformed(
    headers: list[tuple[str, bytes]], says: str
) -> None:
    with pytest.raises(MalformedEvent, match=says):
        from_binary(headers, b"{}")


def test_the_required_attributes_are_enough() -> None:
    envelope = from_binary(MINIMAL_HEADERS, b"{}")
    assert (envelope.specversion, envelope.partitionkey, envelope.sequence) == ("1.0", "s", 1)


def test_headers_other_than_the_bindings_are_ignored_whatever_they_are_named() -> None:
    """Only `ce_*` attributes and `content-type` are read: a header named like an envelope
    field (`id`, `data`) or an extension we do not know changes nothing."""
    noise = [("id", b"not-a-uuid"), ("data", b"[]"), ("subject", b"other"), ("ce_extra", b"x")]
    envelope = from_binary([*noise, *MINIMAL_HEADERS], b'{"a": 1}')
    assert (envelope.subject, envelope.data) == ("s", {"a": 1})
    plain = from_binary(MINIMAL_HEADERS, b'{"a": 1}')
    assert replace(envelope, time=plain.time) == plain


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (b"application/json", True),
        (b"Application/JSON; charset=utf-8", True),
        (b"text/plain", False),
        (b"application/\xff", False),
    ],
)
def test_the_content_type_must_be_json(content_type: bytes, accepted: bool) -> None:
    headers = [*MINIMAL_HEADERS, ("content-type", content_type)]
    if accepted:
        assert from_binary(headers, b"{}").datacontenttype == content_type.decode()
    else:
        with pytest.raises(MalformedEvent, match="unsupported content-type"):
            from_binary(headers, b"{}")


@pytest.mark.parametrize(
    "written",
    [
        "0192f3a4-5b6c-7d8e-9f01-23456789abcd",  # as handoff writes it: the text itself
        "0192F3A4-5B6C-7D8E-9F01-23456789ABCD",  # other spellings of the same id
        "{0192f3a4-5b6c-7d8e-9f01-23456789abcd}",
        "0192f3a45b6c7d8e9f0123456789abcd",
        "urn:uuid:0192f3a4-5b6c-7d8e-9f01-23456789abcd",
    ],
)
def test_the_event_id_text_is_canonical_however_the_header_spelled_it(written: str) -> None:
    headers = [(n, written.encode() if n == "ce_id" else v) for n, v in MINIMAL_HEADERS]
    assert from_binary(headers, b"{}").id == "0192f3a4-5b6c-7d8e-9f01-23456789abcd"


def with_header(name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [*[(n, v) for n, v in MINIMAL_HEADERS if n != name], (name, value)]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ce_id", b"42", "ce_id '42': not a UUID"),
        ("ce_source", b"", "empty CloudEvents header.s.: ce_source"),
        ("ce_type", b"", "empty CloudEvents header.s.: ce_type"),
        ("ce_subject", b"", "empty CloudEvents header.s.: ce_subject"),
        ("ce_time", b"yesterday", "ce_time 'yesterday': not an ISO 8601 timestamp"),
        ("ce_sequence", b"0", "ce_sequence '0': not a positive decimal number"),
        ("ce_sequence", b"-3", "ce_sequence '-3': not a positive decimal number"),
        ("ce_sequence", b"1_000", "ce_sequence '1_000': not a positive decimal number"),
    ],
)
def test_an_invalid_attribute_is_malformed_and_named(name: str, value: bytes, says: str) -> None:
    with pytest.raises(MalformedEvent, match=says):
        from_binary(with_header(name, value), b"{}")


def test_attributes_are_typed_as_read() -> None:
    envelope = from_binary(
        [
            *with_header("ce_time", b"2026-11-24T09:15:00.5Z"),
            ("ce_sequence", b"000000000042"),
            ("ce_traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
        ],
        b"{}",
    )
    assert envelope.time == datetime(2026, 11, 24, 9, 15, 0, 500000, tzinfo=UTC)
    assert envelope.sequence == 42
    assert envelope.traceparent == "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def test_a_time_without_an_offset_is_utc_and_a_missing_one_is_now() -> None:
    naive = from_binary(with_header("ce_time", b"2026-11-24T09:15:00"), b"{}")
    assert naive.time == datetime(2026, 11, 24, 9, 15, tzinfo=UTC)
    before = datetime.now(UTC)
    assert before <= from_binary(MINIMAL_HEADERS, b"{}").time <= datetime.now(UTC)


def test_structured_mode_writes_ids_and_times_as_text_and_leaves_out_a_missing_trace() -> None:
    envelope = build_envelope(
        CATALOG,
        stage_changed(),
        source_service="q",
        subject="x",
        sequence=2,
        event_id=uuid.UUID("0192f3a4-5b6c-7d8e-9f01-23456789abcd"),
        time=datetime(2026, 11, 24, 9, 15, tzinfo=UTC),
    )
    body = orjson.loads(to_structured(envelope))
    assert body["id"] == "0192f3a4-5b6c-7d8e-9f01-23456789abcd"
    assert body["time"] == "2026-11-24T09:15:00+00:00"
    assert "traceparent" not in body
    assert body["data"]["to_stage"] == "mql"


def test_data_that_breaks_the_payload_schema_is_malformed() -> None:
    envelope = build_envelope(CATALOG, stage_changed(), source_service="q", subject="x", sequence=1)
    broken = replace(envelope, data={**envelope.data, "to_stage": "limbo"})
    with pytest.raises(MalformedEvent, match="to_stage"):
        decode_payload(CATALOG, broken)


def test_an_unknown_type_is_refused_by_name() -> None:
    with pytest.raises(UnknownEventType, match=r"handoff\.lead\.teleported\.v1"):
        CATALOG.by_name("handoff.lead.teleported.v1")


def test_every_catalog_type_is_versioned_and_lives_on_a_known_topic() -> None:
    names = [t.name for t in CATALOG]
    assert len(names) == len(set(names)) == 11
    assert all(t.name.startswith("handoff.") and t.name.rsplit(".", 1)[1] == "v1" for t in CATALOG)
    assert {t.topic for t in CATALOG} == set(Topics.ALL)


def test_payloads_ignore_fields_added_by_a_newer_producer() -> None:
    data = stage_changed().model_dump(mode="json") | {"added_in_v1_1": "hello"}
    assert LeadStageChanged.model_validate(data).to_stage == "mql"
