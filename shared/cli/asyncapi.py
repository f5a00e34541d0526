"""`handoff asyncapi`: the event catalog as an AsyncAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from shared.cli.console import console, fail
from shared.events.asyncapi import asyncapi_document
from shared.events.catalog import CATALOG
from shared.http import VERSION


def asyncapi(
    output: Annotated[Path | None, typer.Option(help="Write here, not stdout.")] = None,
) -> None:
    """Print the event catalog as an AsyncAPI 3.0 document (JSON)."""
    document = json.dumps(asyncapi_document(CATALOG, version=VERSION), indent=2) + "\n"
    if output is None:
        print(document, end="")
    else:
        try:
            output.write_text(document)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        console.print(f"wrote {output}")
