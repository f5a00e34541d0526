"""HubSpot webhooks: signature v3 over the raw request, contact events to lead items.

Signature v3 (HubSpot "Validating requests"): HMAC-SHA256, keyed with the app's client
secret, of ``method + uri + body + timestamp`` (UTF-8), base64-encoded. The uri is the full
request URL with the reserved characters of HubSpot's table percent-decoded; nothing else
is decoded (``%20`` or ``%26`` stay as they are).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime
from typing import Any

from services.intake.providers.base import (
    InboundItem,
    InboundRequest,
    MappedKind,
    PayloadError,
    SignatureError,
    SourceConfig,
    assign,
    check_freshness,
    content_digest,
    epoch_millis_time,
    failed,
    given,
    load_json,
    required_header,
    signed_epoch,
)

SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"

# The percent-encodings HubSpot decodes before signing, and nothing more.
_SIGNED_URI_DECODINGS = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_ENCODED = re.compile("|".join(_SIGNED_URI_DECODINGS), re.IGNORECASE)

DEFAULT_FIELD_MAP = {
    "email": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "phone": "phone",
    "mobilephone": "phone",
    "company": "company",
    "website": "company_domain",
    "jobtitle": "job_title",
    "country": "country",
    "industry": "industry",
    "numemployees": "company_size",
}


def signed_uri(url: str) -> str:
    """The request URL as HubSpot signs it: its reserved characters decoded, in one pass."""
    return _ENCODED.sub(lambda match: _SIGNED_URI_DECODINGS[match.group().upper()], url)


def signature_v3(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    """The base64 HMAC-SHA256 that HubSpot sends in ``X-HubSpot-Signature-v3``."""
    message = method.encode() + signed_uri(url).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class HubSpotAdapter:
    """Contact events from a HubSpot app's webhook subscriptions."""

    name: str = "hubspot"
    mapped_kinds: frozenset[MappedKind] = frozenset({"lead"})
    keyed_by_sender: bool = True

    def verify(self, request: InboundRequest, source: SourceConfig, *, now: datetime) -> None:
        """Refuse a request without a fresh, matching v3 signature."""
        signature = required_header(request, SIGNATURE_HEADER)
        check_freshness(signed_epoch(request, TIMESTAMP_HEADER, per_second=1000), now)
        timestamp = request.headers[TIMESTAMP_HEADER]  # signed exactly as sent
        expected = signature_v3(source.secret, request.method, request.url, request.body, timestamp)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureError(f"{SIGNATURE_HEADER} does not match the request")

    def parse(self, request: InboundRequest, source: SourceConfig) -> list[InboundItem]:
        """One item per event of the batch; events that cannot be mapped carry an error."""
        events = load_json(request.body)
        if not isinstance(events, list):
            raise PayloadError("expected a JSON array of HubSpot events")
        field_map = {**DEFAULT_FIELD_MAP, **source.field_map}
        return [_map_event(event, source, field_map) for event in events]


def _map_event(event: Any, source: SourceConfig, field_map: dict[str, str]) -> InboundItem:
    if not isinstance(event, dict):
        return failed(f"hubspot:invalid:{content_digest(event)}", "event is not a JSON object")
    delivery_id = _delivery_id(event)
    kind = event.get("subscriptionType")
    if event.get("eventId") is None:
        return failed(delivery_id, "event has no eventId")
    if kind not in ("contact.creation", "contact.propertyChange", "contact.privacyDeletion"):
        return failed(delivery_id, f"unsupported subscriptionType {kind}")
    if event.get("objectId") is None:
        return failed(delivery_id, "event has no objectId")
    if kind == "contact.privacyDeletion":  # a GDPR deletion in HubSpot: forget the person here
        return InboundItem(
            delivery_id=delivery_id,
            kind="erasure",
            data={"external_ids": {"hubspot": str(event["objectId"])}},
            occurred_at=epoch_millis_time(event.get("occurredAt")),
        )
    data: dict[str, Any] = {
        "external_ids": {"hubspot": str(event["objectId"])},
        "source": source.lead_source,
        "channel": source.channel,
    }
    if kind == "contact.propertyChange":
        prop = event.get("propertyName")
        if not isinstance(prop, str) or not prop:
            return failed(delivery_id, "propertyChange event has no propertyName")
        if given(value := event.get("propertyValue")):  # (cleared: nothing to change)
            assign(data, field_map.get(prop, f"custom.hubspot_{prop}"), value)
    # (when it happened in HubSpot: a retry may come after a newer event of the contact)
    occurred_at = epoch_millis_time(event.get("occurredAt"))
    return InboundItem(delivery_id=delivery_id, kind="lead", data=data, occurred_at=occurred_at)


def _delivery_id(event: dict[str, Any]) -> str:
    if event.get("eventId") is not None:
        return f"hubspot:{event.get('portalId')}:{event['eventId']}"
    # Without an eventId, the content (minus the retry counter) is what stays stable.
    stable = {key: value for key, value in event.items() if key != "attemptNumber"}
    return f"hubspot:{event.get('portalId')}:invalid-{content_digest(stable)}"
