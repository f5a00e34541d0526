"""The one registry of event types: type string <-> payload model <-> topic."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel

from shared.events import payloads as p


class Topics:
    """Kafka topic names; each keeps its whole history so read models can be rebuilt."""

    LEAD_CAPTURED = "handoff.lead.captured"
    LEAD_ACTIVITY = "handoff.lead.activity"
    LEAD_SCORED = "handoff.lead.scored"
    LEAD_STAGE = "handoff.lead.stage"
    LEAD_ASSIGNMENT = "handoff.lead.assignment"
    SLA = "handoff.sla"

    ALL = (LEAD_CAPTURED, LEAD_ACTIVITY, LEAD_SCORED, LEAD_STAGE, LEAD_ASSIGNMENT, SLA)


def dead_letter_topic(group: str) -> str:
    """The dead-letter topic of one consumer group."""
    return f"handoff.dlq.{group}"


@dataclass(frozen=True)
class EventType:
    name: str  # e.g. handoff.lead.captured.v1
    model: type[BaseModel]
    topic: str
    summary: str
    producer: str  # the one service that emits it


class UnknownEventType(LookupError):
    pass


class EventCatalog:
    """Maps event type names and payload classes to each other and to their topic."""

    def __init__(self, types: Iterable[EventType]) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_model: dict[type[BaseModel], EventType] = {}
        for event_type in types:
            if event_type.name in self._by_name:
                raise ValueError(f"event type {event_type.name} registered twice")
            self._by_name[event_type.name] = event_type
            self._by_model[event_type.model] = event_type

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._by_name.values())

    def by_name(self, name: str) -> EventType:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventType(f"unknown event type {name!r}") from None

    def for_payload(self, payload: BaseModel) -> EventType:
        return self.for_payload_type(type(payload))

    def for_payload_type(self, model: type[BaseModel]) -> EventType:
        try:
            return self._by_model[model]
        except KeyError:
            raise UnknownEventType(f"{model.__name__} is not in the catalog") from None

    def extended(self, *types: EventType) -> EventCatalog:
        """A new catalog with extra types (tests and plugins)."""
        return EventCatalog([*self, *types])


def _v1(name: str, model: type[BaseModel], topic: str, producer: str, summary: str) -> EventType:
    return EventType(f"handoff.{name}.v1", model, topic, summary, producer)


CATALOG = EventCatalog(
    [
        _v1(
            "lead.captured",
            p.LeadCaptured,
            Topics.LEAD_CAPTURED,
            "intake",
            "A new lead was captured.",
        ),
        _v1(
            "lead.updated",
            p.LeadUpdated,
            Topics.LEAD_CAPTURED,
            "intake",
            "A lead's profile changed.",
        ),
        _v1(
            "lead.erased",
            p.LeadErased,
            Topics.LEAD_CAPTURED,
            "intake",
            "A lead's personal data was erased.",
        ),
        _v1(
            "lead.activity", p.LeadActivity, Topics.LEAD_ACTIVITY, "intake", "A lead did something."
        ),
        _v1(
            "lead.scored",
            p.LeadScored,
            Topics.LEAD_SCORED,
            "qualification",
            "A lead was (re)scored, with the rules that fired.",
        ),
        _v1(
            "lead.stage_changed",
            p.LeadStageChanged,
            Topics.LEAD_STAGE,
            "qualification",
            "A lead changed lifecycle stage.",
        ),
        _v1(
            "lead.assigned",
            p.LeadAssigned,
            Topics.LEAD_ASSIGNMENT,
            "routing",
            "A lead got an owner, and why.",
        ),
        _v1("sla.started", p.SlaStarted, Topics.SLA, "routing", "An SLA clock started."),
        _v1("sla.warning", p.SlaWarning, Topics.SLA, "routing", "An SLA is close to its budget."),
        _v1("sla.met", p.SlaMet, Topics.SLA, "routing", "An SLA was met."),
        _v1("sla.breached", p.SlaBreached, Topics.SLA, "routing", "An SLA was breached."),
    ]
)
