"""Build a service's FastAPI app from its definition and settings."""

from __future__ import annotations

import importlib
from types import ModuleType

from fastapi import FastAPI

from shared.auth.token_store import TokenStore
from shared.bus.port import Bus
from shared.http import build_app
from shared.runtime import ServiceDefinition, ServiceRuntime, bus_from_settings
from shared.settings.base import ServiceSettings
from shared.settings.services import SERVICES


def create_service_app(
    definition: ServiceDefinition, settings: ServiceSettings, *, bus: Bus | None = None
) -> FastAPI:
    """One service in its own app; `bus` lets a caller share or inject the bus."""
    runtime = ServiceRuntime(
        definition=definition,
        settings=settings,
        bus=bus or bus_from_settings(settings),
        owns_bus=bus is None,
    )
    return build_app(
        [runtime],
        title=f"handoff {definition.name}",
        token_store=TokenStore(settings.resolved_tokens_file()),
        max_body_bytes=settings.max_body_bytes,
    )


def service_module(name: str) -> ModuleType:
    """The composition root (`services.<name>.app`) of a service, imported by name.

    Services are looked up by name so that `shared` never imports a service statically.
    """
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")
    return importlib.import_module(f"services.{name}.app")


def service_definition(name: str) -> ServiceDefinition:
    definition: ServiceDefinition = service_module(name).definition()
    return definition
