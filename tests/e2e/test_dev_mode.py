"""`handoff dev`: every service in one process on one port, with docs and a token."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.infra import ROOT
from tests.integration.test_serve import free_port, wait_ready

SERVICES = {"intake", "qualification", "routing", "metrics", "webhooks"}


@dataclass
class DevProcess:
    base: str
    ready: dict[str, object]
    output: str = ""  # what it printed, once it has stopped


async def start_dev(port: int, data_dir: Path, *, stdout: int) -> asyncio.subprocess.Process:
    """`handoff dev` as a process of its own; what it prints for people goes to stderr."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        "dev",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        cwd=ROOT,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )


@asynccontextmanager
async def handoff_dev(data_dir: Path) -> AsyncIterator[DevProcess]:
    """`handoff dev` on a free port, stopped with SIGTERM afterwards."""
    port = free_port()
    proc = await start_dev(port, data_dir, stdout=asyncio.subprocess.DEVNULL)
    dev = DevProcess(base=f"http://127.0.0.1:{port}", ready={})
    try:
        dev.ready = await wait_ready(dev.base)
        yield dev
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        dev.output = (await asyncio.wait_for(proc.communicate(), timeout=30))[1].decode()


async def test_dev_serves_all_five_services_with_docs_and_prints_an_admin_token(
    tmp_path: Path,
) -> None:
    async with handoff_dev(tmp_path) as dev, httpx.AsyncClient(base_url=dev.base) as client:
        docs = await client.get("/docs")
        asyncapi = (await client.get("/asyncapi.json")).json()

    assert set(dev.ready["checks"]) == SERVICES  # type: ignore[call-overload]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert asyncapi["asyncapi"] == "3.0.0"
    assert re.search(r"admin token \(dev only\): hnd_\S+", dev.output), dev.output
    assert f"{dev.base}/docs" in dev.output
    assert {f"{name}.db" for name in SERVICES} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "events.db").exists()


async def test_a_second_dev_on_the_same_data_directory_says_so_before_anything_else(
    tmp_path: Path,
) -> None:
    async with handoff_dev(tmp_path):
        second = await start_dev(free_port(), tmp_path, stdout=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(second.communicate(), timeout=60)
        output = (out + err).decode()

    assert second.returncode == 2, output
    assert "is in use by another handoff process" in output
    assert "already running with --data-dir" in output
    assert "admin token" not in output and "/docs" not in output


async def test_handoff_import_streams_a_file_with_progress_and_prints_the_summary(
    tmp_path: Path,
) -> None:
    rows = "\n".join(f'{{"email": "user{i}@import-test.com"}}' for i in range(500))
    leads_file = tmp_path / "leads.ndjson"
    leads_file.write_text(rows + '\n{"email": "broken"}\n')
    async with handoff_dev(tmp_path / "data") as dev:
        token = (tmp_path / "data" / "dev-admin-token").read_text().strip()
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.cli",
            "import",
            str(leads_file),
            "--url",
            dev.base,
            "--token",
            token,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "120"},
        )
        output = (await asyncio.wait_for(cli.communicate(), timeout=60))[0].decode()

    assert cli.returncode == 1, output  # a row failed (the others are imported all the same)
    assert "uploading leads.ndjson" in output
    assert re.search(r"501\s.*500\s.*0\s.*0\s.*1", output), output
    assert "line 501: email:" in output
    assert "1 of 501 rows failed; the other 500 were imported" in output
