"""In JSON mode every log line is one JSON object, libraries' stdlib logs included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared.observability.logging import configure_logging


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
