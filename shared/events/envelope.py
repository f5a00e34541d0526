"""The CloudEvents 1.0 envelope every handoff event travels in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.ids import time_ordered_uuid

SPEC_VERSION = "1.0"
JSON = "application/json"


def new_event_id() -> uuid.UUID:
    """A fresh event id: unique, ordered by the millisecond it was made in (UUIDv7)."""
    return time_ordered_uuid()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """CloudEvents 1.0 attributes plus the partitionkey, traceparent and sequence extensions."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=new_event_id)
    specversion: str = SPEC_VERSION
    source: str
    type: str
    subject: str
    time: datetime = Field(default_factory=utcnow)
    datacontenttype: str = JSON
    partitionkey: str
    traceparent: str | None = None
    sequence: int = Field(ge=1)
    data: dict[str, Any]

    @property
    def service(self) -> str:
        """The emitting service, from `source` (`/handoff/<service>`)."""
        return self.source.rsplit("/", 1)[-1]
