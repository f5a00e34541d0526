"""Composition root of the intake service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.intake import api, models, webhooks_api
from services.intake.import_validation import ImportValidator
from services.intake.inbound_sources import SealClearSecrets
from shared.bus.port import Bus
from shared.runtime import ServiceDefinition
from shared.service_app import create_service_app
from shared.settings.services import IntakeSettings

IMPORT_MAX_BYTES = 4 * 1024**3  # imports stream; other bodies keep the default limit


def definition() -> ServiceDefinition:
    """What the intake service is made of."""
    return ServiceDefinition(
        name="intake",
        summary=(
            "Captures leads and activities from APIs, imports and marketing platforms; "
            "owns lead identity and accounts."
        ),
        metadata=models.metadata,
        outbox_tables=models.outbox_tables,
        inbox_table=models.inbox_table,
        migrations=Path(__file__).parent / "migrations",
        routers=[webhooks_api.router, api.router],
        body_limits={"/v1/leads/import": IMPORT_MAX_BYTES},
        workers=lambda runtime: [ImportValidator.of(runtime), SealClearSecrets(runtime)],
    )


def create_app(settings: IntakeSettings | None = None, *, bus: Bus | None = None) -> FastAPI:
    """The intake service as its own ASGI app."""
    return create_service_app(definition(), settings or IntakeSettings(), bus=bus)
