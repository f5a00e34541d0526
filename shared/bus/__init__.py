"""The event bus port and its two adapters (Kafka, and a local SQLite log)."""

from shared.bus.port import Bus, BusError, OutgoingMessage, Record, Subscription

__all__ = ["Bus", "BusError", "OutgoingMessage", "Record", "Subscription"]
