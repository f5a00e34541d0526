"""The `handoff` command: run the services, migrate, manage tokens, benchmark.

Each command has its own module (`dev` and `serve` share `serving`; `tokens` is a group),
failing through `console`; they are registered here, in the order `handoff --help` lists them.
"""

from __future__ import annotations

import typer

from shared.cli import asyncapi, bench, demo, import_file, migrate, serving, tokens

__all__ = ["app", "main"]

app = typer.Typer(
    help="handoff: the shared lead pipeline for marketing and sales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(serving.dev)
app.command()(serving.serve)
app.command()(migrate.migrate)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    bench.bench
)
app.command("import")(import_file.import_file)
app.command()(demo.demo)
app.command()(asyncapi.asyncapi)
app.add_typer(tokens.tokens, name="tokens")


def main() -> None:
    """Run the `handoff` command line."""
    app()
