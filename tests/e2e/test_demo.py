"""`handoff demo` against a running `handoff dev`: leads, accounts and activities to look at."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import httpx

from tests.e2e.test_dev_mode import handoff_dev
from tests.infra import ROOT


async def demo(*args: str) -> tuple[int, str]:
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        "demo",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = (await asyncio.wait_for(cli.communicate(), timeout=120))[0].decode()
    assert cli.returncode is not None
    return cli.returncode, output


async def test_demo_fills_a_running_dev_and_a_second_run_finds_the_same_people(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with handoff_dev(data) as dev:
        # the dev admin token is found in the data directory
        first = await demo("--url", dev.base, "--data-dir", str(data), "--leads", "40")
        again = await demo("--url", dev.base, "--data-dir", str(data), "--leads", "40")
        lead_url = re.search(r"a lead to look at: (\S+)", first[1])
        token = (data / "dev-admin-token").read_text().strip()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
            lead = (await client.get(lead_url.group(1))).json() if lead_url else {}

    assert first[0] == 0, first[1]
    assert re.search(r"marketing leads \(import\)[\s│]+36[\s│]+0[\s│]+0", first[1]), first[1]
    assert re.search(r"sales' leads[\s│]+4[\s│]+0", first[1]), first[1]
    assert again[0] == 0, again[1]
    assert re.search(r"marketing leads \(import\)[\s│]+0[\s│]+36[\s│]+0", again[1]), again[1]
    assert lead["source"] == "sales" and lead["account"]["domain"]


async def test_demo_without_a_running_handoff_says_what_to_do(tmp_path: Path) -> None:
    code, output = await demo("--url", "http://127.0.0.1:9", "--token", "hnd_x", "--leads", "5")

    assert code == 2
    assert "no handoff answers at http://127.0.0.1:9" in output and "make dev" in output
