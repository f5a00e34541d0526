"""Marketo webhooks: a shared token header, and leads as the customer's template renders them.

Marketo does not sign its webhooks, so the customer's webhook template sends a secret token
in a header (``SourceConfig.token_header``) and a JSON object, or array of objects, whose keys
are Marketo field names.

Marketo sends no event id and does not send a webhook again (a call that times out is logged
in Marketo and left), so every object posted is a delivery of its own, applied. The same
content posted twice (two campaigns calling the webhook for one change) is applied twice,
and the second changes nothing and announces nothing; a value that comes back (a status
Open, Working, then Open again) is applied each time.
"""

from __future__ import annotations

import hmac
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
    content_digest,
    failed,
    given,
    load_json,
    required_header,
)
from shared.ids import time_ordered_id

DEFAULT_FIELD_MAP = {
    "email": "email",
    "firstName": "first_name",
    "lastName": "last_name",
    "phone": "phone",
    "company": "company",
    "title": "job_title",
    "country": "country",
    "industry": "industry",
    "numberOfEmployees": "company_size",
    "leadId": "external_ids.marketo",
    "website": "company_domain",
}


class MarketoAdapter:
    """Leads posted by a Marketo webhook template."""

    name: str = "marketo"
    mapped_kinds: frozenset[MappedKind] = frozenset({"lead"})
    keyed_by_sender: bool = False

    def verify(self, request: InboundRequest, source: SourceConfig, *, now: datetime) -> None:
        """Refuse a request whose token header is missing or differs from the shared token."""
        header = source.token_header.lower()
        token = required_header(request, header)
        if not hmac.compare_digest(token.encode(), source.secret.encode()):
            raise SignatureError(f"{header} does not match the shared token")

    def parse(self, request: InboundRequest, source: SourceConfig) -> list[InboundItem]:
        """One lead item per object; objects without an email or leadId carry an error."""
        body = load_json(request.body)
        objects = body if isinstance(body, list) else [body]
        if not objects or not all(isinstance(obj, dict) for obj in objects):
            raise PayloadError("expected a JSON object or a non-empty array of objects")
        field_map = {**DEFAULT_FIELD_MAP, **source.field_map}
        return [_map_lead(obj, source, field_map) for obj in objects]


def _map_lead(obj: dict[str, Any], source: SourceConfig, field_map: dict[str, str]) -> InboundItem:
    data: dict[str, Any] = {"source": source.lead_source, "channel": source.channel}
    for key, value in obj.items():
        if given(value):  # a template renders a missing token as ""
            assign(data, field_map.get(key, f"custom.marketo_{key}"), value)
    lead_id = _lead_id(data)
    # Unique per object posted (see the module's docstring); the digest says what was sent.
    delivery_id = f"marketo:{lead_id or 'none'}:{content_digest(obj)}:{time_ordered_id()}"
    if not data.get("email") and not lead_id:
        return failed(delivery_id, "object has neither an email nor a leadId")
    return InboundItem(delivery_id=delivery_id, kind="lead", data=data)


def _lead_id(data: dict[str, Any]) -> str | None:
    """The Marketo lead id as text (None: the object has none, or an empty one)."""
    external_ids = data.get("external_ids", {})
    raw = external_ids.pop("marketo", None)
    if raw is None:
        if not external_ids:
            data.pop("external_ids", None)
        return None
    external_ids["marketo"] = str(raw)
    return str(raw)
