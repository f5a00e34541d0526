"""Event contracts: the envelope, the versioned payloads and the catalog of types."""

from shared.events.catalog import CATALOG, EventCatalog, EventType, Topics, dead_letter_topic
from shared.events.envelope import Envelope

__all__ = ["CATALOG", "Envelope", "EventCatalog", "EventType", "Topics", "dead_letter_topic"]
