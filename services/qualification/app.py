"""Composition root of the qualification service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.qualification import api, handlers, models, models_api
from services.qualification.rescoring import RescoreWorker
from shared.bus.port import Bus
from shared.runtime import ServiceDefinition
from shared.service_app import create_service_app
from shared.settings.services import QualificationSettings


def definition() -> ServiceDefinition:
    """What the qualification service is made of."""
    return ServiceDefinition(
        name="qualification",
        summary="Scores leads with the agreed model, assesses BANT and owns the lifecycle stage.",
        metadata=models.metadata,
        outbox_tables=models.outbox_tables,
        inbox_table=models.inbox_table,
        migrations=Path(__file__).parent / "migrations",
        routers=[api.router, models_api.router],
        handlers=handlers.handlers,
        workers=lambda runtime: [RescoreWorker(runtime)],
    )


def create_app(settings: QualificationSettings | None = None, *, bus: Bus | None = None) -> FastAPI:
    """The qualification service as its own ASGI app."""
    return create_service_app(definition(), settings or QualificationSettings(), bus=bus)
