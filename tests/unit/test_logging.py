"""In JSON mode every log line is one JSON object, libraries' stdlib logs included."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
import structlog

from shared.observability.logging import LibraryRepeats, configure_logging


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_library_logs_and_their_tracebacks_are_json_lines(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(level="info", json=True)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    structlog.get_logger("handoff").info("service started", service="intake")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    assert [(line["event"], line["level"]) for line in lines] == [
        ("Started server process [42]", "info"),
        ("Exception in ASGI application", "error"),
        ("service started", "info"),
    ]
    assert lines[0]["logger"] == "uvicorn.error"
    assert "ValueError: boom" in lines[1]["exception"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_library_message_repeated_within_the_window_is_let_through_once() -> None:
    clock = Clock()
    repeats = LibraryRepeats(("aiokafka",), window=10.0, clock=clock)
    unable = "Unable connect to node with id %s: %s"

    refused = "Connect call failed"
    passed = [repeats.filter(record("aiokafka.client", unable, 1, refused)) for _ in range(5)]
    other = repeats.filter(record("aiokafka.client", unable, 1, "Connection reset"))
    own = [repeats.filter(record("shared.outbox_relay", "outbox relay failed")) for _ in range(3)]
    with_traceback = record("aiokafka.client", unable, 1, refused)
    with_traceback.exc_info = (ValueError, ValueError("boom"), None)
    clock.now = 10.5
    later = record("aiokafka.client", unable, 1, refused)

    assert passed == [True, False, False, False, False]
    assert other is True  # another message (its arguments differ): its own window
    assert own == [True, True, True]  # not a library named: everything goes through
    assert repeats.filter(with_traceback) is True
    assert repeats.filter(later) is True
    assert later.__dict__["repeated"] == 4
    assert repeats.filter(record("aiokafka.client", unable, 1, refused)) is False


def test_the_filter_remembers_a_bounded_number_of_messages() -> None:
    clock = Clock()
    repeats = LibraryRepeats(("aiokafka",), window=10.0, clock=clock, remember=100)
    for n in range(1000):
        assert repeats.filter(record("aiokafka.conn", "node %s closed", n)) is True
    assert len(repeats._seen) <= 100


def test_held_back_library_messages_are_counted_on_the_json_line(
    restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(level="info", json=True)
    client = logging.getLogger("aiokafka.client")
    for _ in range(100):
        client.error("Unable connect to node with id %s: %s", 1, "refused")
    handler = logging.getLogger().handlers[0]
    (repeats,) = [f for f in handler.filters if isinstance(f, LibraryRepeats)]
    repeats.clock = lambda: time.monotonic() + repeats.window  # the window has passed
    client.error("Unable connect to node with id %s: %s", 1, "refused")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    assert [(line["event"], line.get("repeated")) for line in lines] == [
        ("Unable connect to node with id 1: refused", None),
        ("Unable connect to node with id 1: refused", 99),
    ]
