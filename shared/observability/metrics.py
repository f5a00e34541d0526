"""Prometheus metrics shared by every service (the `service` label tells them apart)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "handoff_http_requests_total",
    "HTTP requests served.",
    ["service", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "handoff_http_request_duration_seconds",
    "HTTP request duration.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_CONSUMED = Counter(
    "handoff_events_consumed_total",
    "Events consumed, by outcome (processed, duplicate, ignored, dead_lettered).",
    ["service", "group", "type", "outcome"],
)
EVENTS_FAILED = Counter(
    "handoff_events_failed_total",
    "Handler failures (each attempt).",
    ["service", "group", "type"],
)
CONSUMER_LAG = Gauge(
    "handoff_consumer_lag",
    "Records not yet consumed per partition.",
    ["service", "group", "topic", "partition"],
)
OUTBOX_PUBLISHED = Counter(
    "handoff_outbox_published_total",
    "Events relayed from the outbox to the bus.",
    ["service"],
)
OUTBOX_BACKLOG = Gauge(
    "handoff_outbox_backlog",
    "Events waiting in the outbox.",
    ["service"],
)
OUTBOX_AGE = Gauge(
    "handoff_outbox_oldest_age_seconds",
    "Age of the oldest event waiting in the outbox.",
    ["service"],
)
KAFKA_PRODUCERS_REPLACED = Counter(
    "handoff_kafka_producers_replaced_total",
    "Kafka producers replaced after a failed publish (a new one sends the events again).",
    ["client_id"],
)
