"""Versioned payload models of every handoff event (the event catalog's data schemas).

Rules: a new field is optional (old consumers ignore it, new consumers default it); a
breaking change is a new type version (`.v2`) registered beside the old one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["lead", "mql", "sgl", "sal", "sql", "won", "lost", "nurture", "disqualified"]
LeadSource = Literal["marketing", "sales"]


class Payload(BaseModel):
    """Base of all event payloads: immutable, tolerant of fields added later."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    lead_id: uuid.UUID


class Actor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["system", "user"]
    id: str


class Reason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    code: str
    text: str = ""


class LeadCaptured(Payload):
    """A new lead landed in intake, normalized and matched to an account.

    Events carry no direct identifiers (email, names, phone): those stay in intake, where
    erasure can remove them. `email_domain` and `email_kind` are enough to score fit.
    """

    source: LeadSource
    channel: str | None = None
    campaign: str | None = None
    account_id: uuid.UUID | None = None
    email_domain: str | None = None
    email_kind: Literal["business", "freemail", "disposable"] | None = None
    profile: dict[str, Any] = Field(default_factory=dict)
    external_ids: dict[str, str] = Field(default_factory=dict)


class LeadUpdated(Payload):
    """A known lead's profile changed, or it was linked to its record on another platform;
    only the changed fields are carried, and only the ids newly linked (`external_ids`:
    provider -> id, from this capture)."""

    changes: dict[str, Any] = Field(default_factory=dict)
    changed_pii: list[str] = Field(default_factory=list)
    account_id: uuid.UUID | None = None
    source: LeadSource | None = None
    external_ids: dict[str, str] = Field(default_factory=dict)


class LeadActivity(Payload):
    """Something the lead did (page view, form submit, webinar, call...)."""

    activity_id: uuid.UUID
    activity_type: str
    occurred_at: datetime
    properties: dict[str, Any] = Field(default_factory=dict)


class LeadErased(Payload):
    """The lead asked to be forgotten: every service drops its personal data."""

    requested_by: str


class ScoreContribution(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    rule_id: str
    points: float
    cause_event_id: uuid.UUID | None = None


class LeadScored(Payload):
    score: float
    delta: float
    fit: float
    engagement: float
    model_version: str
    explanation: list[ScoreContribution] = Field(default_factory=list)


class LeadStageChanged(Payload):
    from_stage: Stage | None
    to_stage: Stage
    actor: Actor
    reason: Reason
    model_version: str | None = None
    bant_assessment_id: uuid.UUID | None = None


class LeadAssigned(Payload):
    owner_id: str
    team_id: str
    stage: Stage
    rule_id: str | None = None
    why: str


class SlaEvent(Payload):
    sla_id: uuid.UUID
    policy_id: str
    stage: Stage
    owner_id: str | None = None
    due_at: datetime


class SlaStarted(SlaEvent):
    pass


class SlaWarning(SlaEvent):
    pass


class SlaMet(SlaEvent):
    business_seconds: float


class SlaBreached(SlaEvent):
    action: Literal["notify", "reassign", "escalate"]
