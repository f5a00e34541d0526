"""Composition root of the webhooks service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.webhooks import models
from shared.bus.port import Bus
from shared.runtime import ServiceDefinition
from shared.service_app import create_service_app
from shared.settings.services import WebhooksSettings


def definition() -> ServiceDefinition:
    """What the webhooks service is made of."""
    return ServiceDefinition(
        name="webhooks",
        summary="Delivers stage, assignment and SLA events to subscribers (CRMs).",
        metadata=models.metadata,
        outbox_tables=models.outbox_tables,
        inbox_table=models.inbox_table,
        migrations=Path(__file__).parent / "migrations",
    )


def create_app(settings: WebhooksSettings | None = None, *, bus: Bus | None = None) -> FastAPI:
    """The webhooks service as its own ASGI app."""
    return create_service_app(definition(), settings or WebhooksSettings(), bus=bus)
