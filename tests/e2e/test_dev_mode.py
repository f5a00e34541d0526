"""`handoff dev`: every service in one process on one port, with docs and a token."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import httpx

from tests.infra import ROOT
from tests.integration.test_serve import free_port, wait_ready

SERVICES = {"intake", "qualification", "routing", "metrics", "webhooks"}


async def test_dev_serves_all_five_services_with_docs_and_prints_an_admin_token(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        "dev",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ready = await wait_ready(base)
        async with httpx.AsyncClient(base_url=base) as client:
            docs = await client.get("/docs")
            asyncapi = (await client.get("/asyncapi.json")).json()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)

    assert set(ready["checks"]) == SERVICES  # type: ignore[arg-type]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert asyncapi["asyncapi"] == "3.0.0"
    output = stderr.decode()
    token = re.search(r"admin token \(dev only\): (hnd_\S+)", output)
    assert token is not None, output
    assert f"{base}/docs" in output
    assert {f"{name}.db" for name in SERVICES} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "events.db").exists()
