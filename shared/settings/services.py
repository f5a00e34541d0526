"""The services' settings: one class per service, each adding its own to `ServiceSettings`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import NoDecode

from shared.lead_fields import LEAD_FIELDS, SALES_OWNED_DEFAULT
from shared.settings.base import ServiceSettings
from shared.settings.validation import listed_names

SERVICES = ("intake", "qualification", "routing", "metrics", "webhooks")


class IntakeSettings(ServiceSettings):
    service: ClassVar[str] = "intake"

    # Fields a marketing sync may not overwrite once sales has entered them.
    sales_owned_fields: Annotated[frozenset[str], NoDecode, BeforeValidator(listed_names)] = (
        SALES_OWNED_DEFAULT
    )
    # Rows per import transaction: 2,000 served ~7% more rows/s than 1,000 on both
    # databases (fixed costs per batch: statements, commit, relay cycle); 4,000 no more.
    import_batch_size: int = Field(default=2000, ge=1, le=10_000)
    import_max_errors: int = Field(default=1000, ge=0)
    # Processes that decode and validate import rows beside the one writing them (0: none).
    import_parse_processes: int = Field(default=1, ge=0, le=8)

    @field_validator("sales_owned_fields")
    @classmethod
    def _known_fields(cls, value: frozenset[str]) -> frozenset[str]:
        if unknown := sorted(value - LEAD_FIELDS):
            known = ", ".join(sorted(LEAD_FIELDS))
            raise ValueError(f"no such lead field: {', '.join(unknown)} (known: {known})")
        return value


class QualificationSettings(ServiceSettings):
    service: ClassVar[str] = "qualification"

    # A recycled lead must show new engagement this long after recycling to be an MQL again.
    recycle_cooldown_days: float = Field(default=30.0, ge=0)
    # BANT: criteria that must be met, and how many of the four in all.
    bant_required: Annotated[
        tuple[Literal["budget", "authority", "need", "timeframe"], ...],
        NoDecode,
        BeforeValidator(listed_names),
    ] = ("need",)
    bant_min_met: int = Field(default=3, ge=0, le=4)


class RoutingSettings(ServiceSettings):
    service: ClassVar[str] = "routing"


class MetricsSettings(ServiceSettings):
    service: ClassVar[str] = "metrics"


class WebhooksSettings(ServiceSettings):
    service: ClassVar[str] = "webhooks"


SETTINGS_BY_SERVICE: dict[str, type[ServiceSettings]] = {
    cls.service: cls
    for cls in (
        IntakeSettings,
        QualificationSettings,
        RoutingSettings,
        MetricsSettings,
        WebhooksSettings,
    )
}
