"""Composition root of the routing service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.routing import models
from shared.bus.port import Bus
from shared.runtime import ServiceDefinition
from shared.service_app import create_service_app
from shared.settings.services import RoutingSettings


def definition() -> ServiceDefinition:
    """What the routing service is made of."""
    return ServiceDefinition(
        name="routing",
        summary="Assigns an owner to every handed-off lead and runs the SLA clocks.",
        metadata=models.metadata,
        outbox_tables=models.outbox_tables,
        inbox_table=models.inbox_table,
        migrations=Path(__file__).parent / "migrations",
    )


def create_app(settings: RoutingSettings | None = None, *, bus: Bus | None = None) -> FastAPI:
    """The routing service as its own ASGI app."""
    return create_service_app(definition(), settings or RoutingSettings(), bus=bus)
