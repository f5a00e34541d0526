"""`handoff demo`: fill a running handoff with made-up data to look at."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from shared.cli.console import console, fail
from shared.cli.options import DataDir

if TYPE_CHECKING:
    from shared.demo import DemoSummary


def demo(
    url: Annotated[str, typer.Option(envvar="HANDOFF_URL", help="handoff's base URL.")] = (
        "http://127.0.0.1:8000"
    ),
    token: Annotated[
        str,
        typer.Option(
            envvar="HANDOFF_TOKEN",
            help="An admin's token (default: the one `handoff dev` keeps in its data directory).",
        ),
    ] = "",
    data_dir: DataDir = Path(".handoff"),
    leads: Annotated[int, typer.Option(min=1, max=100_000, help="How many people.")] = 200,
    seed: Annotated[int, typer.Option(help="The same seed makes the same people.")] = 7,
) -> None:
    """Fill a running handoff with made-up leads, accounts and activities to look at."""
    from shared import demo as demo_data  # (Faker loads only for this command)

    if not token:
        token = _saved_token(data_dir)
    made = demo_data.plan(leads, seed=seed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as bars:

        def progress(what: str, total: int) -> Any:
            task = bars.add_task(what, total=total)
            return lambda n: bars.advance(task, n)

        try:
            summary = demo_data.run(url, token, made, progress=progress)
        except demo_data.DemoError as exc:
            fail(str(exc))
    _print_summary(url, summary)


def _saved_token(data_dir: Path) -> str:
    """The admin token `handoff dev` keeps in its data directory."""
    saved = data_dir / "dev-admin-token"
    if not saved.exists():
        fail(
            f"a token is needed: --token or HANDOFF_TOKEN (no {saved}: is `handoff dev` "
            "running with this --data-dir?)"
        )
    return saved.read_text().strip()


def _print_summary(url: str, summary: DemoSummary) -> None:
    """What was sent, as a table, and a lead to look at."""
    imported = summary.imported
    table = Table(title=f"demo data sent to {url}")
    for column in ("what", "created", "updated or unchanged", "failed"):
        table.add_column(column, justify="right" if column != "what" else "left")
    table.add_row(
        "marketing leads (import)",
        f"{imported['created']:,}",
        f"{imported['updated'] + imported['unchanged']:,}",
        f"{imported['failed']:,}",
    )
    table.add_row(
        "sales' leads", f"{summary.sales['created']:,}", f"{summary.sales['updated']:,}", "0"
    )
    table.add_row("activities", f"{sum(summary.activities.values()):,}", "", "0")
    console.print(table)
    console.print(
        f"{summary.companies} companies; activities: "
        + ", ".join(f"{kind} {n}" for kind, n in summary.activities.most_common())
    )
    if summary.sample_lead:
        console.print(f"a lead to look at: {url.rstrip('/')}/v1/leads/{summary.sample_lead}")
