"""What every webhook provider adapter takes, returns and raises.

Adapters are pure: no I/O, no clock (``now`` is passed in), no web framework. The route
calls ``verify`` over the raw body first and ``parse`` only when that succeeded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

# How far a signed timestamp may drift from ``now`` either way before it is refused.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60


@dataclass(frozen=True)
class InboundRequest:
    """One webhook request exactly as received."""

    method: str
    url: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


@dataclass(frozen=True)
class SourceConfig:
    """One configured inbound source: which provider, its secret and its defaults."""

    name: str
    provider: str
    secret: str
    lead_source: Literal["marketing", "sales"] = "marketing"
    channel: str | None = None
    field_map: Mapping[str, str] = field(default_factory=dict)
    token_header: str = "x-handoff-token"  # noqa: S105 - a header name, not a secret


# The longest delivery id stored (`webhook_deliveries.delivery_id`). Senders choose theirs
# (a Standard Webhooks `webhook-id` has no bound): a longer one is kept as its first 200
# characters and a digest of the whole, the same for every retry of it.
DELIVERY_ID_MAX = 300


@dataclass(frozen=True)
class InboundItem:
    """One provider event mapped to canonical fields, or the reason it could not be.

    `occurred_at` is when the event happened at the provider, if it says (HubSpot's
    `occurredAt`): a retried delivery can arrive after a newer one, and a lead's field
    keeps the value of the latest event that set it (see `identity.merge`)."""

    delivery_id: str
    kind: Literal["lead", "activity", "erasure"]  # erasure: `data` names the lead to forget
    data: dict[str, Any]
    error: str | None = None
    occurred_at: datetime | None = None  # aware, UTC

    def __post_init__(self) -> None:
        if len(self.delivery_id) > DELIVERY_ID_MAX:
            digest = hashlib.sha256(self.delivery_id.encode()).hexdigest()
            object.__setattr__(self, "delivery_id", f"{self.delivery_id[:200]}...{digest}")


class SignatureError(Exception):
    """The request is not authentic (answer 401); never carries the expected signature."""


class PayloadError(Exception):
    """The body as a whole is unusable (answer 422)."""


MappedKind = Literal["lead", "activity"]


class ProviderAdapter(Protocol):
    """Verifies and maps the webhooks of one provider."""

    name: str
    # The kinds of item its field map fills (`SourceConfig.field_map`): a source of this
    # provider may map a field only to a field of one of them.
    mapped_kinds: frozenset[MappedKind]
    # Whether its delivery ids (`<name>:...`) are the sender's own key for one event, which
    # a retry of the event carries again and which holds no personal data (kept past an
    # erasure, so that a retry is a duplicate), rather than made from the event's content.
    keyed_by_sender: bool

    def verify(self, request: InboundRequest, source: SourceConfig, *, now: datetime) -> None:
        """Raise SignatureError unless the raw request is authentic and fresh."""
        ...

    def parse(self, request: InboundRequest, source: SourceConfig) -> list[InboundItem]:
        """Map a verified body to canonical items; raise PayloadError if it is unusable."""
        ...


def failed(
    delivery_id: str, reason: str, kind: Literal["lead", "activity"] = "lead"
) -> InboundItem:
    """An item that keeps its delivery id but could not be mapped."""
    return InboundItem(delivery_id=delivery_id, kind=kind, data={}, error=reason)


def required_header(request: InboundRequest, name: str) -> str:
    """A header's value, or SignatureError naming the header that is missing."""
    value = request.headers.get(name)
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


def load_json(body: bytes) -> Any:
    """The decoded JSON body, or PayloadError saying why it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc


def content_digest(value: Any) -> str:
    """A short, stable digest of a JSON value, independent of key order and spacing."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def epoch_seconds(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_millis_time(value: Any) -> datetime | None:
    """The time of an epoch timestamp in milliseconds (HubSpot's `occurredAt`); None for
    anything that is not such a number (missing, text, true, out of range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except (OverflowError, ValueError):  # (out of datetime's range, or NaN)
        return None


def iso_time(value: Any) -> datetime | None:
    """The time of an ISO 8601 text (a naive one taken to be UTC); None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def signed_epoch(request: InboundRequest, header: str, *, per_second: int) -> float:
    """The header's epoch timestamp in seconds (``per_second`` units make one second)."""
    value = required_header(request, header)
    # Bounded length: a 30-digit "timestamp" is garbage, and must not overflow a float later.
    if not (value.isascii() and value.isdigit() and len(value) <= 15):
        raise SignatureError(f"{header} is not an epoch timestamp")
    return int(value) / per_second


def check_freshness(signed_at: float, now: datetime) -> None:
    """Refuse a signed timestamp (epoch seconds) too far before or after ``now``."""
    drift = signed_at - epoch_seconds(now)
    if drift < -TIMESTAMP_TOLERANCE_SECONDS:
        raise SignatureError("request timestamp is more than 5 minutes old")
    if drift > TIMESTAMP_TOLERANCE_SECONDS:
        raise SignatureError("request timestamp is more than 5 minutes in the future")


def given(value: Any) -> bool:
    """False for null and for an empty or blank text: how a marketing platform sends a value
    it does not have (a Marketo template's missing token) or no longer has (a HubSpot
    property cleared). Such a value is not given, and leaves the lead's as it is."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def assign(data: dict[str, Any], target: str, value: Any) -> None:
    """Set a canonical field; ``external_ids.x`` and ``custom.x`` address nested keys."""
    parent, dot, key = target.partition(".")
    if dot and parent in ("external_ids", "custom"):
        data.setdefault(parent, {})[key] = value
    else:
        data[target] = value
