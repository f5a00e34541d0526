"""`handoff serve <service>` runs one service as its own process on Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx

from tests.conftest import new_pg_database
from tests.infra import ROOT, free_port


async def test_a_served_service_is_ready_on_real_kafka_and_postgres_and_stops_on_sigterm(
    kafka_servers: str, postgres_admin_url: str, tmp_path: object
) -> None:
    port = free_port()
    async with new_pg_database(postgres_admin_url) as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_servers,
            "HANDOFF_ENV": "test",
            "HANDOFF_SECRET_KEY": "test-secret-not-default-" + "0" * 16,
            "HANDOFF_DATA_DIR": str(tmp_path),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.cli",
            "serve",
            "routing",
            "--port",
            str(port),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            ready = await wait_ready(f"http://127.0.0.1:{port}")
            assert ready["checks"]["routing"] == {"database": "ok", "bus": "ok"}
            async with httpx.AsyncClient() as client:
                docs = await client.get(f"http://127.0.0.1:{port}/openapi.json")
            assert docs.json()["info"]["title"] == "handoff routing"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        # uvicorn re-raises SIGTERM once its graceful shutdown is over
        assert proc.returncode in (0, -signal.SIGTERM)
        assert b'"event": "service stopped"' in stderr
        # served on uvloop (`shared.process.serve_http`), not asyncio's own loop
        assert b'"event_loop": "uvloop"' in stderr


async def wait_ready(base: str, timeout: float = 60) -> dict[str, object]:
    async with httpx.AsyncClient() as client, asyncio.timeout(timeout):
        while True:
            try:
                response = await client.get(f"{base}/readyz")
                if response.status_code == 200:
                    return dict(response.json())
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
