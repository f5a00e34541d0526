"""Composition root of the metrics service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.metrics import models
from shared.bus.port import Bus
from shared.runtime import ServiceDefinition
from shared.service_app import create_service_app
from shared.settings.services import MetricsSettings


def definition() -> ServiceDefinition:
    """What the metrics service is made of."""
    return ServiceDefinition(
        name="metrics",
        summary="Funnel read model, shared KPIs, lead timelines and the dashboard.",
        metadata=models.metadata,
        outbox_tables=models.outbox_tables,
        inbox_table=models.inbox_table,
        migrations=Path(__file__).parent / "migrations",
    )


def create_app(settings: MetricsSettings | None = None, *, bus: Bus | None = None) -> FastAPI:
    """The metrics service as its own ASGI app."""
    return create_service_app(definition(), settings or MetricsSettings(), bus=bus)
