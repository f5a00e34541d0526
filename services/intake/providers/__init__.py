"""Webhook adapters for ``POST /v1/webhooks/{provider}``, by provider name."""

from __future__ import annotations

from services.intake.providers.base import (
    InboundItem,
    InboundRequest,
    PayloadError,
    ProviderAdapter,
    SignatureError,
    SourceConfig,
)
from services.intake.providers.hubspot import HubSpotAdapter
from services.intake.providers.marketo import MarketoAdapter
from services.intake.providers.standard import StandardWebhooksAdapter

ADAPTERS: dict[str, ProviderAdapter] = {
    adapter.name: adapter
    for adapter in (HubSpotAdapter(), StandardWebhooksAdapter(), MarketoAdapter())
}

# How the delivery ids of senders' own event keys begin (see `keyed_by_sender`).
SENDER_KEYED_PREFIXES = tuple(f"{a.name}:" for a in ADAPTERS.values() if a.keyed_by_sender)

__all__ = [
    "ADAPTERS",
    "SENDER_KEYED_PREFIXES",
    "InboundItem",
    "InboundRequest",
    "PayloadError",
    "ProviderAdapter",
    "SignatureError",
    "SourceConfig",
]
