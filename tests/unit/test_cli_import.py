"""`handoff import`: what it sends for which file, and what it says when the server refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from shared.cli import app, import_file

SUMMARY = {"rows": 1, "created": 1, "updated": 0, "unchanged": 0, "failed": 0, "errors": []}


class Server:
    """Stands in for `POST /v1/leads/import`: records what was sent, answers `answer`."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.sent: list[tuple[str, bytes]] = []

    def post(self, url: str, *, content: Any, headers: dict[str, str], **_: Any) -> httpx.Response:
        self.sent.append((headers["Content-Type"], b"".join(content)))
        return self.answer


def run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, answer: httpx.Response, *args: str
) -> tuple[Any, Server]:
    server = Server(answer)
    monkeypatch.setattr(import_file.httpx, "post", server.post)
    file = tmp_path / name
    file.write_bytes(b'{"email": "ana@acme.com"}\n')
    result = CliRunner().invoke(app, ["import", str(file), "--token", "t", *args])
    return result, server


@pytest.mark.parametrize(
    ("name", "args", "kind"),
    [
        ("leads.csv", (), "text/csv"),
        ("leads.ndjson", (), "application/x-ndjson"),
        ("leads.jsonl", (), "application/x-ndjson"),
        ("leads.txt", ("--format", "csv"), "text/csv"),
        ("export", ("--format", "NDJSON"), "application/x-ndjson"),
    ],
)
def test_the_format_is_the_extensions_or_the_one_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, args: tuple[str, ...], kind: str
) -> None:
    result, server = run(tmp_path, monkeypatch, name, httpx.Response(200, json=SUMMARY), *args)

    assert result.exit_code == 0, result.output
    assert server.sent == [(kind, b'{"email": "ana@acme.com"}\n')]


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("leads.txt", (), "cannot tell whether leads.txt is CSV or NDJSON"),
        ("leads.xlsx", (), "name it .csv, .ndjson or .jsonl, or pass --format"),
        ("leads.csv", ("--format", "xml"), "--format 'xml': expected csv or ndjson"),
    ],
)
def test_a_file_of_no_known_format_is_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, args: tuple[str, ...], says: str
) -> None:
    result, server = run(tmp_path, monkeypatch, name, httpx.Response(200, json=SUMMARY), *args)

    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
    assert server.sent == []


def test_a_refusal_shows_the_problems_detail_and_field_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = {
        "title": "Unreadable CSV header",
        "detail": "the header cannot be read, so no row can be",
        "errors": [{"field": "header", "reason": "line 1 (the header): not UTF-8 text"}],
    }
    answer = httpx.Response(422, json=problem, headers={"content-type": "application/problem+json"})

    result, _ = run(tmp_path, monkeypatch, "leads.csv", answer)

    assert result.exit_code == 2
    assert "import refused (422): the header cannot be read" in result.output
    assert "header: line 1 (the header): not UTF-8 text" in result.output


def test_a_proxys_html_error_page_is_reported_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>"
    answer = httpx.Response(502, text=page, headers={"content-type": "text/html"})

    result, _ = run(tmp_path, monkeypatch, "leads.ndjson", answer)

    assert result.exit_code == 2
    assert (
        "import refused (502): <html><body><h1>502 Bad Gateway</h1> <p>nginx</p>" in result.output
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_columns_the_server_ignored_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = httpx.Response(200, json={**SUMMARY, "ignored_columns": ["Lead Score", "frist_name"]})
    result, _ = run(tmp_path, monkeypatch, "leads.csv", answer)

    assert result.exit_code == 0, result.output
    assert "ignored columns, no lead field: Lead Score, frist_name" in " ".join(
        result.output.split()
    )
