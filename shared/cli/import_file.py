"""`handoff import`: stream a file of leads to intake's import endpoint, with progress."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from shared.cli.console import console, fail
from shared.problems import read_problem, snippet

_IMPORT_FORMATS = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
_FORMAT_OF = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}
_ERRORS_SHOWN = 20


def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="NDJSON or CSV.")],
    url: Annotated[str, typer.Option(envvar="HANDOFF_URL", help="handoff's base URL.")] = (
        "http://127.0.0.1:8000"
    ),
    token: Annotated[str, typer.Option(envvar="HANDOFF_TOKEN", help="A writer's token.")] = "",
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv or ndjson (default: from the file's extension: .csv; .ndjson, .jsonl).",
        ),
    ] = None,
) -> None:
    """Import leads from a file, streamed to `POST /v1/leads/import` with a progress bar.

    Exit status: 0 when every row was imported; 1 when any row failed (the good rows are
    imported all the same, and the failures listed); 2 when the file was not sent or the
    server refused it.
    """
    if not token:
        fail("a token is needed: --token or HANDOFF_TOKEN (handoff tokens create ...)")
    kind = _content_type(file, file_format)
    summary = _upload(file, f"{url.rstrip('/')}/v1/leads/import", token, kind)
    table = Table(title=f"import of {file.name}")
    for column in ("rows", "created", "updated", "unchanged", "failed"):
        table.add_column(column, justify="right")
    table.add_row(
        *(f"{summary[c]:,}" for c in ("rows", "created", "updated", "unchanged", "failed"))
    )
    console.print(table)
    if ignored := summary.get("ignored_columns"):
        console.print(
            f"ignored columns, no lead field: {', '.join(ignored)} (rename one to a field, "
            "or to custom.<name> to keep it as a custom attribute)",
            markup=False,
        )
    _print_row_errors(summary)
    if summary["failed"]:
        imported = summary["created"] + summary["updated"] + summary["unchanged"]
        console.print(
            f"{summary['failed']:,} of {summary['rows']:,} rows failed; "
            f"the other {imported:,} were imported"
        )
        raise typer.Exit(1)


def _content_type(file: Path, file_format: str | None) -> str:
    """The upload's content type, from `--format` or else the file's extension."""
    kind = _IMPORT_FORMATS.get((file_format or _FORMAT_OF.get(file.suffix.lower(), "")).lower())
    if kind is None:
        if file_format:
            fail(f"--format {file_format!r}: expected csv or ndjson")
        fail(
            f"cannot tell whether {file.name} is CSV or NDJSON from its extension: "
            "name it .csv, .ndjson or .jsonl, or pass --format csv|ndjson"
        )
    return kind


def _print_row_errors(summary: dict[str, Any]) -> None:
    """The first errors of the import's summary, and how many more there were."""
    errors = summary["errors"]
    for error in errors[:_ERRORS_SHOWN]:
        line = f"  line {error['line']}: {error['field']}: {error['reason']}"
        console.print(line, markup=False)
    if len(errors) > _ERRORS_SHOWN:
        console.print(f"  ... {len(errors) - _ERRORS_SHOWN:,} more errors not shown")
    if summary.get("errors_truncated") and errors:
        console.print(
            "  ... and more errors the server did not keep (errors_truncated: it keeps the "
            "first lines' errors, up to HANDOFF_IMPORT_MAX_ERRORS)"
        )
    elif summary.get("errors_truncated"):
        console.print("  (the server kept no errors to show: HANDOFF_IMPORT_MAX_ERRORS is 0)")


def _upload(file: Path, endpoint: str, token: str, kind: str) -> dict[str, Any]:
    size = file.stat().st_size
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"uploading {file.name}", total=size)

        def chunks() -> Iterator[bytes]:
            with file.open("rb") as source:
                while chunk := source.read(256 * 1024):
                    progress.advance(task, len(chunk))
                    yield chunk

        try:
            response = httpx.post(
                endpoint,
                content=chunks(),
                timeout=httpx.Timeout(30, read=3600),  # a big import takes a while
                headers={"Authorization": f"Bearer {token}", "Content-Type": kind},
            )
        except httpx.HTTPError as exc:
            fail(f"could not reach {endpoint}: {exc}")
    if response.status_code != 200:
        fail(f"import refused ({response.status_code}): {_problem_text(response)}")
    try:
        result: dict[str, Any] = response.json()
    except ValueError:
        fail(f"{endpoint} answered 200 with no import summary: {snippet(response.text)}")
    return result


def _problem_text(response: httpx.Response) -> str:
    """What an error answer says (`read_problem`), or its status's phrase."""
    return read_problem(response.text) or response.reason_phrase
