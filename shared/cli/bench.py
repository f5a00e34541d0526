"""`handoff bench`: run a benchmark script from the repository's bench/ directory."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer

from shared.cli.console import fail


def bench(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Benchmark in bench/ (bus, intake); further options go to it.")
    ] = "bus",
) -> None:
    """Run a benchmark from the repository's bench/ directory."""
    script = Path("bench") / f"{name}.py"
    if not script.exists():
        fail(f"{script} not found (run from the repository root)")
    sys.argv = [str(script), *ctx.args]
    sys.path.insert(0, str(Path.cwd()))
    runpy.run_path(str(script), run_name="__main__")
