"""Finds (or starts) the real Kafka broker and PostgreSQL server the integration tests use.

Order of preference: `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` from the environment, then
testcontainers when a Docker engine answers, then the project's own no-Docker runner in
`deploy/local/`. Missing infrastructure is a test failure with the reason, never a skip
(unless a developer sets HANDOFF_SKIP_INTEGRATION=1 outside CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_LOCAL = ROOT / "deploy" / "local"


class InfrastructureMissing(RuntimeError):
    pass


def unavailable(what: str, why: str) -> None:
    """Fail (CI, default) or skip (explicit opt-out outside CI) with the reason."""
    message = (
        f"{what} is required by the integration tests and could not be started: {why}\n"
        f"Start it with `deploy/local/{what.split()[0].lower()}.sh start`, or point "
        f"the tests at one with KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL."
    )
    if os.environ.get("HANDOFF_SKIP_INTEGRATION") == "1" and os.environ.get("CI") != "true":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_local(
    script: str, command: str = "start", env: dict[str, str] | None = None
) -> dict[str, str]:
    """Run `deploy/local/<script> <command>` (with `env`, else ours); the variables it
    printed (`export NAME=value` lines)."""
    result = subprocess.run(
        ["bash", str(DEPLOY_LOCAL / script), command],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=env,
    )
    if result.returncode != 0:
        raise InfrastructureMissing(
            f"deploy/local/{script} {command} failed "
            f"(exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    env = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name.isupper():
            env[name] = value.strip("'\"")
    return env


def kafka_bootstrap_servers() -> str:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return servers
    if _docker_answers():  # pragma: no cover - no Docker engine on our CI machines
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().with_kraft()
        container.start()
        return str(container.get_bootstrap_server())
    env = run_local("kafka.sh")
    if "KAFKA_BOOTSTRAP_SERVERS" not in env:
        raise InfrastructureMissing(f"kafka.sh printed no KAFKA_BOOTSTRAP_SERVERS: {env}")
    return env["KAFKA_BOOTSTRAP_SERVERS"]


def postgres_url() -> str:
    if url := os.environ.get("DATABASE_URL"):
        return url
    if _docker_answers():  # pragma: no cover - no Docker engine on our CI machines
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16", driver="asyncpg")
        container.start()
        return str(container.get_connection_url())
    env = run_local("postgres.sh")
    if "DATABASE_URL" not in env:
        raise InfrastructureMissing(f"postgres.sh printed no DATABASE_URL: {env}")
    return env["DATABASE_URL"]
