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

__all__ = [
    "ADAPTERS",
    "InboundItem",
    "InboundRequest",
    "PayloadError",
    "ProviderAdapter",
    "SignatureError",
    "SourceConfig",
]
