"""Standard Webhooks (standardwebhooks.com): any sender that signs the open spec.

The ``standardwebhooks`` package computes the signature, but its ``verify`` compares the
timestamp with the wall clock; the freshness check is made here against the ``now`` we are
given, so verification stays pure and testable.
"""

from __future__ import annotations

import binascii
import hmac
from datetime import UTC, datetime
from typing import Any, Literal

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from services.intake.providers.base import (
    InboundItem,
    InboundRequest,
    MappedKind,
    PayloadError,
    SignatureError,
    SourceConfig,
    assign,
    check_freshness,
    failed,
    iso_time,
    load_json,
    required_header,
    signed_epoch,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

EVENT_KINDS: dict[str, Literal["lead", "activity"]] = {
    "lead.captured": "lead",
    "activity.recorded": "activity",
}


class StandardWebhooksAdapter:
    """Canonical leads and activities from any Standard Webhooks sender."""

    name: str = "standard"
    mapped_kinds: frozenset[MappedKind] = frozenset(EVENT_KINDS.values())
    keyed_by_sender: bool = True

    def verify(self, request: InboundRequest, source: SourceConfig, *, now: datetime) -> None:
        """Refuse a request without a fresh ``v1`` signature made with the source's secret."""
        msg_id = required_header(request, ID_HEADER)
        signed_at = signed_epoch(request, TIMESTAMP_HEADER, per_second=1)
        signatures = required_header(request, SIGNATURE_HEADER)
        check_freshness(signed_at, now)
        try:
            payload = request.body.decode()
        except UnicodeDecodeError as exc:
            raise SignatureError("body is not UTF-8, so its signature cannot be checked") from exc
        moment = datetime.fromtimestamp(signed_at, tz=UTC)
        expected = _webhook(source).sign(msg_id, moment, payload)
        # The header lists space-separated "version,signature" pairs; one v1 match suffices.
        if not any(
            hmac.compare_digest(expected.encode(), given.encode()) for given in signatures.split()
        ):
            raise SignatureError(f"no {SIGNATURE_HEADER} entry matches the request")

    def parse(self, request: InboundRequest, source: SourceConfig) -> list[InboundItem]:
        """The one event of the body as a lead or activity item."""
        msg_id = request.headers.get(ID_HEADER)
        if not msg_id:
            raise PayloadError(f"missing {ID_HEADER} header")
        event = load_json(request.body)
        if not isinstance(event, dict):
            raise PayloadError("expected a JSON object with type and data")
        delivery_id = f"standard:{msg_id}"
        kind = EVENT_KINDS.get(str(event.get("type")))
        if kind is None:
            return [failed(delivery_id, f"unsupported event type {event.get('type')}")]
        fields = event.get("data")
        if not isinstance(fields, dict):
            return [failed(delivery_id, "data is not a JSON object", kind)]
        # The event's own time ("timestamp", when it happened), if the sender gives one.
        occurred_at = iso_time(event.get("timestamp"))
        return [InboundItem(delivery_id, kind, _canonical(fields, kind, source), None, occurred_at)]


def _webhook(source: SourceConfig) -> Webhook:
    try:
        return Webhook(source.secret)
    except (binascii.Error, EmptyWebhookSecretError) as exc:
        # A configuration fault, not the sender's: let it surface as a server error.
        raise ValueError(f"source {source.name!r} has an invalid whsec_ secret") from exc


def _canonical(
    fields: dict[str, Any], kind: Literal["lead", "activity"], source: SourceConfig
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in fields.items():
        assign(data, source.field_map.get(key, key), value)
    if kind == "lead":
        data.setdefault("source", source.lead_source)
        data.setdefault("channel", source.channel)
    return data
