"""How a pydantic validation error reads to the people who sent the data (no web imports:
import workers use it too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def error_reason(error: Mapping[str, Any]) -> str:
    """What one pydantic error says, without the "Value error, " that pydantic puts before
    the message of a validator's `ValueError` (the message says it all)."""
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")
