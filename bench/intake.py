"""Intake benchmark: signed HubSpot webhooks and streamed imports against a served
`handoff serve intake` (SQLite and PostgreSQL), side by side with a bare FastAPI endpoint
that only validates the same payload. See bench/README.md for the method.

    PYTHONPATH=. .venv/bin/python bench/intake.py [--quick] [--seconds S] ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `handoff bench` runs us by path

import httpx
import orjson
from fastapi import FastAPI
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from bench.common import (
    FreshPgDatabase,
    above_zero,
    at_least,
    machine,
    percentile,
    pg_connect,
    postgres_admin_url,
    postgres_cpu_s,
    postmaster_pid,
    proc_cpu_s,
    system_busy,
    write_results,
    zero_or_more,
)
from shared.process import serve_http, settle_for_serving
from shared.settings.loading import load_settings

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SCRIPT = str(Path(__file__).resolve())
console = Console(width=None if sys.stdout.isatty() else 160)

TARGET_WEBHOOK_RATIO = 0.5
TARGET_IMPORT_ROWS_PER_S = 20_000.0
HUBSPOT_SECRET = "bench-hubspot-app-secret-0123456789"
SOURCE_NAME = "bench-hs"
WEBHOOK_PATH = f"/v1/webhooks/hubspot?source={SOURCE_NAME}"
PORTAL_ID = 62515

FIRST = ("ana", "ben", "chloe", "dev", "eva", "farid", "grace", "hugo", "ines", "jon", "kim")
LAST = ("smith", "garcia", "müller", "rossi", "dubois", "novak", "tanaka", "silva", "khan")
TITLES = ("VP Sales", "Marketing Manager", "CTO", "Head of Growth", "RevOps Lead", "Engineer")
COUNTRIES = ("DE", "US", "France", "United Kingdom", "ES", "Italy", "NL", "Sweden", "PL", "Japan")
CHANNELS = ("import", "web_form", "webinar", "event", "content", "paid", "referral")
FREEMAIL = ("gmail.com", "yahoo.com", "outlook.com")


def company_domains(count: int = 500) -> list[tuple[str, str]]:
    """(company, domain): a fixed pool, so that leads share accounts as real ones do."""
    rng = random.Random(7)
    syllables = ("ac", "me", "glo", "bex", "tri", "nor", "vel", "qua", "zen", "lum", "dyn")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < count:
        name = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))
        if name not in seen:
            seen.add(name)
            out.append((name.capitalize() + " " + rng.choice(("GmbH", "Inc", "Ltd", "SA")), name))
    return [
        (company, f"{domain}.{'com' if i % 3 else 'io'}") for i, (company, domain) in enumerate(out)
    ]


# --- the load generator (its own process: `--loadgen CONFIG`) ---------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight (no pipelining).

    A deliberately small client: writes prebuilt request bytes, reads the status line and
    Content-Length framed body. About 15-25 µs of CPU per request, so one client process can
    offer several times what one server process can answer.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.need = -1
        self.head = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(ConnectionError("response without content-length"))
                return
            stop = head.find(b"\r\n", at + 2)
            self.head = end + 4
            self.need = self.head + int(head[at + 17 : stop if stop > 0 else len(head)])
        if len(self.buffer) >= self.need:
            status = int(self.buffer[9:12])
            body = bytes(self.buffer[self.head : self.need])
            del self.buffer[: self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((status, body))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc}"))

    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """Send one request, await its response (a timer, not `wait_for`: no task each)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, self._fail, TimeoutError(f"no answer in {timeout} s"))
        self.transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()


class CpuWindow:
    """CPU over a phase: this process, the server process, PostgreSQL, the whole box."""

    def __init__(self, server_pid: int, postmaster: int | None) -> None:
        self.server_pid = server_pid
        self.postmaster = postmaster
        self.wall = time.perf_counter()
        self.me = time.process_time()
        self.server = proc_cpu_s(server_pid)
        self.pg = postgres_cpu_s(postmaster)
        self.box = system_busy()

    def result(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        busy1, total1 = system_busy()
        return {
            "client_cpu_cores": (time.process_time() - self.me) / wall,
            "server_cpu_cores": (proc_cpu_s(self.server_pid) - self.server) / wall,
            "postgres_cpu_cores": (postgres_cpu_s(self.postmaster) - self.pg) / wall,
            "machine_busy": (busy1 - self.box[0]) / max(1, total1 - self.box[1]),
        }


class HubSpotRequests:
    """Signed HubSpot deliveries: one new contact per request (its email, maybe firstname).

    The body is what HubSpot posts for `contact.propertyChange` subscriptions; the v3
    signature is computed when the request is built, right before it is sent, over
    "POST" + full URL + body + timestamp (ms), keyed with the app secret.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.url = f"http://{cfg['host']}:{cfg['port']}{cfg['path']}".encode()
        self.start = (
            f"POST {cfg['path']} HTTP/1.1\r\nHost: {cfg['host']}:{cfg['port']}\r\n"
            "User-Agent: HubSpot Connect 2.0 (bench)\r\nContent-Type: application/json\r\n"
        ).encode()
        self.secret = cfg["secret"].encode()
        self.run = cfg["run"]
        self.events = cfg["events_per_request"]
        self.domains = company_domains()
        self.object_base = cfg["object_base"]

    def email(self, seq: int) -> str:
        first, last = FIRST[seq % len(FIRST)], LAST[seq % len(LAST)].replace("ü", "u")
        domain = FREEMAIL[seq % 3] if seq % 10 == 0 else self.domains[seq % len(self.domains)][1]
        return f"{first}.{last}.{self.run}.{seq}@{domain}"

    def body(self, seq: int, now_ms: int) -> bytes:
        common = (
            f'"portalId":{PORTAL_ID},"appId":7,"subscriptionId":3,"attemptNumber":0,'
            f'"occurredAt":{now_ms - 1500},"objectId":{self.object_base + seq},'
            f'"subscriptionType":"contact.propertyChange","changeSource":"FORM"'
        )
        events = [
            f'{{"eventId":{2 * seq + 1},{common},"propertyName":"email",'
            f'"propertyValue":"{self.email(seq)}"}}'
        ]
        if self.events > 1:
            first = FIRST[seq % len(FIRST)].capitalize()
            events.append(
                f'{{"eventId":{2 * seq + 2},{common},"propertyName":"firstname",'
                f'"propertyValue":"{first}"}}'
            )
        return ("[" + ",".join(events) + "]").encode()

    def build(self, seq: int) -> bytes:
        now_ms = int(time.time() * 1000)
        body = self.body(seq, now_ms)
        timestamp = str(now_ms).encode()
        mac = hmac.new(self.secret, b"POST" + self.url + body + timestamp, hashlib.sha256)
        return b"".join(
            (
                self.start,
                b"Content-Length: %d\r\n" % len(body),
                b"X-HubSpot-Signature-v3: " + base64.b64encode(mac.digest()) + b"\r\n",
                b"X-HubSpot-Request-Timestamp: " + timestamp + b"\r\n\r\n",
                body,
            )
        )


@dataclass
class LoadTally:
    ok: int = 0
    bad: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)

    def error(self, reason: str) -> None:
        self.bad += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1


async def _loadgen(cfg: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: `concurrency` connections, each sends its next request when answered."""
    requests = HubSpotRequests(cfg)
    expect = cfg["events_per_request"]
    loop = asyncio.get_running_loop()
    phases = {"warmup": LoadTally(), "measured": LoadTally()}
    sequence = iter(range(10**12))
    ok_seqs: list[int] = []
    t_measure = time.perf_counter_ns() + int(cfg["warmup_s"] * 1e9)
    t_end = t_measure + int(cfg["seconds"] * 1e9)
    window: CpuWindow | None = None
    progress = 0

    def valid(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200].decode(errors='replace')}"
        answer = orjson.loads(body)
        if answer.get("accepted") != expect or answer.get("failed") or answer.get("duplicates"):
            return f"unexpected answer {body[:200].decode(errors='replace')}"
        return None

    async def connect() -> _Connection:
        _t, conn = await loop.create_connection(_Connection, cfg["host"], cfg["port"])
        return conn

    async def worker() -> None:
        nonlocal window, progress
        conn = await connect()
        while (now := time.perf_counter_ns()) < t_end:
            if window is None and now >= t_measure:
                window = CpuWindow(cfg["server_pid"], cfg["postmaster"])
            seq = next(sequence)
            data = requests.build(seq)
            t0 = time.perf_counter_ns()
            try:
                status, body = await conn.request(data, cfg["timeout_s"])
                problem = valid(status, body)
            except (OSError, TimeoutError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if conn.transport is not None:
                    conn.transport.close()
                conn = await connect()
            t1 = time.perf_counter_ns()
            tally = phases["measured" if t_measure <= t1 <= t_end else "warmup"]
            if t1 > t_end:  # answered after the window: neither throughput nor latency
                tally = phases["warmup"]
            if problem is None:
                tally.ok += 1
                ok_seqs.append(seq)
                if tally is phases["measured"]:
                    tally.latencies_ns.append(t1 - t0)
            else:
                tally.error(problem[:300])
            progress += 1
        if conn.transport is not None:
            conn.transport.close()

    async def report_progress() -> None:
        while True:
            print(f"P {progress}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.25)

    reporter = asyncio.create_task(report_progress())
    await asyncio.gather(*(worker() for _ in range(cfg["concurrency"])))
    reporter.cancel()
    cpu = window.result() if window is not None else {}
    measured = phases["measured"]
    lat = sorted(x / 1e6 for x in measured.latencies_ns)
    elapsed = cfg["seconds"]
    rng = random.Random(1)
    sample = rng.sample(ok_seqs, min(cfg["sample"], len(ok_seqs)))
    return {
        "concurrency": cfg["concurrency"],
        "events_per_request": expect,
        "warmup": {"ok": phases["warmup"].ok, "bad": phases["warmup"].bad},
        "requests": measured.ok,
        "bad": measured.bad,
        "errors": {
            reason: phases["warmup"].errors.get(reason, 0) + measured.errors.get(reason, 0)
            for reason in {*phases["warmup"].errors, *measured.errors}
        },
        "elapsed_s": elapsed,
        "requests_per_s": measured.ok / elapsed,
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else float("nan"),
        },
        "total_ok": phases["warmup"].ok + measured.ok,
        "total_bad": phases["warmup"].bad + measured.bad,
        "sample_emails": [requests.email(s) for s in sample],
        **cpu,
    }


def loadgen_main(raw: str) -> int:
    result = asyncio.run(_loadgen(json.loads(raw)))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# --- the baseline: a bare FastAPI endpoint (its own process: `--serve-baseline PORT`) ----------


class HubSpotEvent(BaseModel):
    """One event of a HubSpot webhook delivery, as the baseline validates it."""

    eventId: int  # noqa: N815 - HubSpot's field names
    subscriptionId: int  # noqa: N815
    portalId: int  # noqa: N815
    appId: int  # noqa: N815
    occurredAt: int  # noqa: N815
    subscriptionType: str  # noqa: N815
    attemptNumber: int  # noqa: N815
    objectId: int  # noqa: N815
    changeSource: str | None = None  # noqa: N815
    propertyName: str | None = None  # noqa: N815
    propertyValue: str | None = None  # noqa: N815


def baseline_app() -> FastAPI:
    """One endpoint: FastAPI + pydantic validate a HubSpot event array, answer small JSON."""
    app = FastAPI(title="bare baseline")

    @app.post("/v1/webhooks/hubspot")
    async def webhook(events: list[HubSpotEvent]) -> dict[str, Any]:
        return {"accepted": len(events), "duplicates": 0, "failed": []}

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def serve_baseline(port: int) -> int:
    # Served exactly as `handoff serve` serves a service (`shared.process.serve_http`: one
    # process, uvloop and httptools, no access log), with the same garbage-collector
    # settings and frozen start-up objects (HANDOFF_GC_THRESHOLD applies to both alike).
    app = baseline_app()
    settle_for_serving(load_settings("intake").gc_threshold)
    serve_http(app, host="127.0.0.1", port=port)
    return 0


# --- orchestration --------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """The commit measured, and whether services/ or shared/ differed from it."""
    import subprocess

    def git(*argv: str) -> str:
        result = subprocess.run(
            ["git", *argv], capture_output=True, text=True, cwd=ROOT, check=False, timeout=30
        )
        return result.stdout.strip()

    dirty = git("status", "--porcelain", "--", "services", "shared").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": dirty}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A served process (handoff intake or the baseline) and where it listens."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    log: Path
    data_dir: Path | None = None
    database_url: str | None = None
    postmaster: int | None = None  # PostgreSQL's, for its CPU

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_tail()}")

    async def stop(self) -> int | None:
        """SIGINT (uvicorn's graceful shutdown; a profiler writes its report), then SIGKILL."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=60)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def start_server(
    name: str, argv: Sequence[str], env: dict[str, str], log: Path, port: int, **extra: Any
) -> Server:
    out = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=out, stderr=out, env=env, cwd=ROOT, start_new_session=True
    )
    out.close()
    server = Server(name=name, process=process, port=port, log=log, **extra)
    try:
        await server.wait_ready()
    except BaseException:
        await server.stop()
        raise
    return server


def served_env(workdir: Path, database_url: str, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=database_url,
        HANDOFF_ENV="dev",
        HANDOFF_DATA_DIR=str(workdir),
        HANDOFF_TOKENS_FILE=str(workdir.parent / "tokens.json"),
        HANDOFF_LOG_LEVEL="warning",
    )
    if args.max_body_bytes:
        env["HANDOFF_MAX_BODY_BYTES"] = str(args.max_body_bytes)
    return env


def create_token(tokens_file: Path, role: str, name: str) -> str:
    import subprocess

    env = {**os.environ, "HANDOFF_TOKENS_FILE": str(tokens_file), "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [str(VENV_BIN / "handoff"), "tokens", "create", "--role", role, "--name", name],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1]


class Runner:
    def __init__(self, args: argparse.Namespace, progress: Progress, workdir: Path) -> None:
        self.args = args
        self.progress = progress
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:6]
        self.object_base = 10_000_000
        tokens = workdir / "tokens.json"
        self.admin = create_token(tokens, "admin", "bench")
        self.writer = create_token(tokens, "integration", "bench-import")

    # --- load phases ---

    async def load(self, server: Server, label: str) -> dict[str, Any]:
        """Run the load generator (own process) against `server`; progress from its stderr."""
        args = self.args
        cfg = {
            "host": "127.0.0.1",
            "port": server.port,
            "path": WEBHOOK_PATH,
            "secret": HUBSPOT_SECRET,
            "run": self.run_id,
            "object_base": self.object_base,
            "events_per_request": args.events_per_request,
            "concurrency": args.concurrency,
            "warmup_s": args.warmup_seconds,
            "seconds": args.seconds,
            "timeout_s": 30.0,
            "server_pid": server.process.pid,
            "postmaster": server.postmaster,
            "sample": 20,
        }
        self.object_base += 10_000_000  # every run's HubSpot object ids are new
        task = self.progress.add_task(
            f"{label}: {args.warmup_seconds:g} s warm-up + {args.seconds:g} s",
            total=None,
            detail="",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--loadgen",
            json.dumps(cfg),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert proc.stdout is not None and proc.stderr is not None
        other: list[str] = []

        async def follow(stream: asyncio.StreamReader) -> None:
            async for line in stream:
                text = line.decode(errors="replace").rstrip()
                if text.startswith("P "):
                    self.progress.update(task, detail=f"{int(text[2:]):,} requests")
                else:
                    other.append(text)

        follower = asyncio.create_task(follow(proc.stderr))
        limit = args.seconds + args.warmup_seconds + 120
        try:
            stdout = await asyncio.wait_for(proc.stdout.read(), timeout=limit)
            await asyncio.wait_for(proc.wait(), timeout=30)
        except TimeoutError:
            proc.kill()
            raise
        await follower
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({proc.returncode}):\n" + "\n".join(other))
        result: dict[str, Any] = json.loads(stdout)
        self.progress.update(
            task,
            description=f"{label}: [green]{result['requests_per_s']:,.0f} req/s"
            + (f" [red]{result['total_bad']} failed" if result["total_bad"] else ""),
        )
        return result

    # --- the baseline ---

    async def baseline(self, label: str) -> dict[str, Any]:
        port = free_port()
        argv = [sys.executable, SCRIPT, "--serve-baseline", str(port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        server = await start_server(
            "baseline", argv, env, self.workdir / f"baseline-{port}.log", port
        )
        try:
            return await self.load(server, label)
        finally:
            await server.stop()

    # --- handoff intake ---

    async def intake(self, backend: str, database_url: str) -> dict[str, Any]:
        args = self.args
        data_dir = self.workdir / backend
        data_dir.mkdir()
        port = free_port()
        argv = [str(VENV_BIN / "handoff"), "serve", "intake", "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
        if args.profile:
            report = self.profile_path(backend)
            argv = [
                sys.executable,
                "-m",
                "pyinstrument",
                "-r",
                "pyisession",
                "-o",
                str(report),
                "-m",
                "shared.cli",
                *argv[1:],
            ]
        env = served_env(data_dir, database_url, args)
        server = await start_server(
            f"intake ({backend})",
            argv,
            env,
            data_dir / "server.log",
            port,
            data_dir=data_dir,
            database_url=database_url,
        )
        out: dict[str, Any] = {"database": backend}
        if backend == "postgres":
            server.postmaster = await postmaster_pid(database_url)
        try:
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as api:
                response = await api.post(
                    "/v1/inbound-sources",
                    json={"name": SOURCE_NAME, "provider": "hubspot", "secret": HUBSPOT_SECRET},
                    headers={"Authorization": f"Bearer {self.admin}"},
                )
                response.raise_for_status()
                if not args.skip_webhooks:
                    out["webhooks"] = await self.load(server, f"handoff intake ({backend})")
                    out["webhooks"]["verify"] = await self.verify_webhooks(
                        api, server, out["webhooks"]
                    )
                if not args.skip_import:
                    out["import"] = await self.import_rows(api, server, backend)
                out["verify_log"] = await self.verify_log(api, server)
        finally:
            out["server_exit"] = await server.stop()
        if args.profile:
            hooks, imported = out.get("webhooks"), out.get("import")
            if hooks and not imported:
                units, unit = hooks["total_ok"], "request"
            elif imported and not hooks:
                units, unit = imported["rows"], "row"
            else:
                units, unit = 1, "run"
            out["profile"] = profile_summary(self.profile_path(backend), units, unit)
        return out

    def profile_path(self, backend: str) -> Path:
        return self.args.results_dir / f"intake-profile-{backend}-{self.args.stamp}.pyisession"

    async def metrics(self, api: httpx.AsyncClient) -> dict[str, float]:
        text = (await api.get("/metrics")).text
        out = {}
        for name in ("handoff_outbox_published_total", "handoff_outbox_backlog"):
            match = re.search(rf'^{name}\{{service="intake"\}} (\S+)$', text, re.M)
            out[name] = float(match.group(1)) if match else 0.0
        return out

    async def drained(self, api: httpx.AsyncClient, published: float, timeout: float) -> float:
        """Poll /metrics until the relay has published `published` events; returns when."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = await self.metrics(api)
            if seen["handoff_outbox_published_total"] >= published:
                return time.perf_counter()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the relay did not publish {published:.0f} events in {timeout:.0f} s")

    async def count(self, server: Server, sql: str) -> int:
        """One number from the service's own database, read directly (not through the API)."""
        assert server.database_url is not None
        url = make_url(server.database_url)
        if url.get_backend_name() == "sqlite":
            conn = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
            try:
                return int(conn.execute(sql).fetchone()[0])
            finally:
                conn.close()
        pg = await pg_connect(url)
        try:
            return int(await pg.fetchval(sql))
        finally:
            await pg.close()

    async def verify_webhooks(
        self, api: httpx.AsyncClient, server: Server, load: dict[str, Any]
    ) -> dict[str, Any]:
        """Every answered request is a lead in the database; a sample reads back by id."""
        leads = await self.count(server, "SELECT count(*) FROM leads")
        deliveries = await self.count(server, "SELECT count(*) FROM webhook_deliveries")
        emails = ", ".join(f"'{e}'" for e in load["sample_emails"])
        found = 0
        read_back = 0
        if emails:
            assert server.database_url is not None
            ids = await self.lead_ids(server, emails)
            found = len(ids)
            for lead_id, email in ids:
                got = await api.get(
                    f"/v1/leads/{lead_id}", headers={"Authorization": f"Bearer {self.admin}"}
                )
                body = got.json() if got.status_code == 200 else {}
                if body.get("email") == email and "hubspot" in body.get("external_ids", {}):
                    read_back += 1
        ok = load["total_ok"]
        events = ok * load["events_per_request"]
        return {
            "answered_ok": ok,
            "leads_in_db": leads,
            "deliveries_in_db": deliveries,
            "expected_deliveries": events,
            "sample": len(load["sample_emails"]),
            "sample_found": found,
            "sample_read_back": read_back,
            "stored": leads == ok
            and deliveries == events
            and read_back == len(load["sample_emails"])
            and load["total_bad"] == 0,
        }

    async def lead_ids(self, server: Server, emails: str) -> list[tuple[str, str]]:
        assert server.database_url is not None
        url = make_url(server.database_url)
        sql = f"SELECT id, email FROM leads WHERE email IN ({emails})"
        if url.get_backend_name() == "sqlite":
            conn = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
            try:
                return [(str(a), str(b)) for a, b in conn.execute(sql)]
            finally:
                conn.close()
        pg = await pg_connect(url)
        try:
            return [(str(r[0]), str(r[1])) for r in await pg.fetch(sql)]
        finally:
            await pg.close()

    async def verify_log(self, api: httpx.AsyncClient, server: Server) -> dict[str, Any]:
        """After the relay drained: `lead.captured` records in the local event log == leads."""
        backlog_deadline = time.monotonic() + 60
        while (await self.metrics(api))["handoff_outbox_backlog"] > 0:
            if time.monotonic() > backlog_deadline:
                break
            await asyncio.sleep(0.1)
        leads = await self.count(server, "SELECT count(*) FROM leads")
        assert server.data_dir is not None
        conn = sqlite3.connect(f"file:{server.data_dir / 'events.db'}?mode=ro", uri=True)
        try:
            captured = conn.execute(
                "SELECT count(*) FROM records WHERE CAST(headers AS TEXT) LIKE "
                "'%handoff.lead.captured.v1%'"
            ).fetchone()[0]
        finally:
            conn.close()
        return {"leads_in_db": leads, "lead_captured_in_log": captured, "ok": leads == captured}

    # --- imports ---

    async def import_rows(
        self, api: httpx.AsyncClient, server: Server, backend: str
    ) -> dict[str, Any]:
        body = self.import_body(backend)
        rows = self.args.import_rows
        before = (await self.metrics(api))["handoff_outbox_published_total"]
        chunk = 64 * 1024
        task = self.progress.add_task(f"import ({backend}): upload", total=len(body), detail="")
        t_first: float | None = None
        sent = 0
        cpu0 = time.thread_time()

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal t_first, sent
            for start in range(0, len(body), chunk):
                if t_first is None:
                    t_first = time.perf_counter()
                piece = body[start : start + chunk]
                sent += len(piece)
                self.progress.update(
                    task, completed=sent, detail=f"{sent / 1e6:.1f}/{len(body) / 1e6:.1f} MB"
                )
                yield piece

        window = CpuWindow(server.process.pid, server.postmaster)
        response = await api.post(
            "/v1/leads/import",
            content=chunks(),
            headers={
                "Authorization": f"Bearer {self.writer}",
                "Content-Type": "application/x-ndjson",
            },
            timeout=httpx.Timeout(30, read=600),
        )
        t_response = time.perf_counter()
        cpu = window.result()
        assert t_first is not None
        client_cpu = time.thread_time() - cpu0
        if response.status_code != 200:
            self.progress.update(task, description=f"import ({backend}): [red]refused")
            return {
                "rows": rows,
                "status": response.status_code,
                "answer": response.text[:500],
                "ok": False,
            }
        summary = response.json()
        elapsed = t_response - t_first
        self.progress.update(
            task, description=f"import ({backend}): [green]{rows / elapsed:,.0f} rows/s"
        )
        relay = self.progress.add_task(f"import ({backend}): relay", total=rows, detail="")
        deadline = time.monotonic() + self.args.drain_timeout
        published = before
        while published < before + rows and time.monotonic() < deadline:
            published = (await self.metrics(api))["handoff_outbox_published_total"]
            self.progress.update(
                relay,
                completed=published - before,
                detail=f"{published - before:,.0f}/{rows:,} events published",
            )
            await asyncio.sleep(0.05)
        t_published = time.perf_counter()
        events = int(published - before)
        ok = summary.get("created") == rows and summary.get("failed") == 0 and events == rows
        return {
            "rows": rows,
            "bytes": len(body),
            "status": response.status_code,
            "summary": {k: summary.get(k) for k in ("rows", "created", "updated", "failed")},
            "first_errors": summary.get("errors", [])[:5],
            "elapsed_s": elapsed,
            "rows_per_s": rows / elapsed,
            "events_published": events,
            "published_elapsed_s": t_published - t_first,
            "rows_per_s_to_published": events / (t_published - t_first),
            "client_cpu_s": client_cpu,
            **{k: v for k, v in cpu.items() if k != "client_cpu_cores"},
            "ok": ok,
        }

    def import_body(self, backend: str) -> bytes:
        """`--import-rows` NDJSON leads with realistic fields (new emails for every backend)."""
        rows = self.args.import_rows
        rng = random.Random(backend)
        domains = company_domains()
        task = self.progress.add_task(f"import ({backend}): generate rows", total=rows, detail="")
        lines = []
        for n in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            company, domain = rng.choice(domains)
            mail_domain = rng.choice(FREEMAIL) if rng.random() < 0.1 else domain
            row: dict[str, Any] = {
                "email": f"{first}.{last}.{self.run_id}.{backend}.{n}@{mail_domain}",
                "first_name": first.capitalize(),
                "last_name": last.capitalize(),
                "company": company,
                "company_domain": domain,
                "job_title": rng.choice(TITLES),
                "country": rng.choice(COUNTRIES),
                "company_size": rng.choice((8, 45, 200, 1200, 15000)),
                "channel": rng.choice(CHANNELS),
            }
            lines.append(orjson.dumps(row))
            if n % 5000 == 4999 or n == rows - 1:
                self.progress.update(task, completed=n + 1, detail=f"{n + 1:,}/{rows:,} rows")
        return b"\n".join(lines) + b"\n"


# --- profile summary -----------------------------------------------------------------------

PACKAGES = (
    ("sqlalchemy", "SQLAlchemy (Core/ORM; runs in greenlets, callers not on the stack)"),
    ("asyncpg", "asyncpg"),
    ("sqlite3", "sqlite3"),
    ("fastapi", "FastAPI"),
    ("starlette", "Starlette"),
    ("uvicorn", "uvicorn"),
    ("h11", "h11"),
    ("pydantic", "pydantic"),
    ("email_validator", "email-validator"),
    ("idna", "idna"),
    ("anyio", "anyio (thread pool)"),
    ("asyncio", "asyncio"),
    ("structlog", "structlog"),
    ("prometheus_client", "prometheus_client"),
    ("tenacity", "tenacity"),
    ("json", "json (stdlib)"),
)


def _frame(identifier: str) -> tuple[str, str]:
    """(Class.function, path relative to the repo or site-packages) of a pyinstrument frame."""
    parts = identifier.split("\x00")
    func = parts[0]
    path = parts[1] if len(parts) > 1 else ""
    extra = parts[2].split("\x01") if len(parts) > 2 else []
    cls = next((e[1:] for e in extra if e.startswith("c")), None)
    if cls:
        func = f"{cls}.{func}"
    for marker in ("site-packages/", f"{ROOT}/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[-1]
    return func, path


def profile_summary(path: Path, units: int, unit: str, top: int = 30) -> dict[str, Any]:
    """Where the served process spent its time, from a pyinstrument session.

    `handoff` functions (services/, shared/): inclusive time. Libraries: time spent in
    their own frames (leaf samples); C functions by name, with the package calling them.
    Start-up (imports, migrations) and idle (the loop waiting for I/O) are split out; per-unit
    figures divide by `units` (requests or rows). SQLAlchemy runs its sync part in
    greenlets, whose samples do not carry the calling handoff function: that time shows
    under the package, not under the caller.
    """
    from pyinstrument.session import Session

    session = Session.load(str(path))
    inclusive: dict[str, float] = {}
    leaf: dict[str, float] = {}
    own: dict[str, float] = {}
    total = idle = startup = 0.0
    for identifiers, seconds in session.frame_records:
        total += seconds
        frames = [_frame(i) for i in identifiers]
        func, where = frames[-1]
        names = {f for f, _ in frames}
        # asyncio's loop is Python (`_run_once`, idle in `epoll.poll`); uvloop's is C, so
        # its samples show the runner's frame (`Runner.run`), with nothing in Python on
        # top of it while the loop waits
        runner = next((k for k, (f, _) in enumerate(frames) if f == "Runner.run"), None)
        in_loop = runner is not None or any(f.endswith("._run_once") for f in names)
        in_greenlet = any(p.startswith("sqlalchemy/") for _, p in frames[:3])
        waiting_in_c = runner is not None and all(
            p.startswith("<") for _, p in frames[runner + 1 :]
        )
        if in_loop and (func in ("epoll.poll", "poll", "select") or waiting_in_c):
            idle += seconds
            continue
        if (
            (not in_loop and not in_greenlet)
            or names & {"_find_and_load", "upgrade"}
            or any(p.startswith("alembic/") for _, p in frames)
        ):
            startup += seconds
            continue
        seen: set[str] = set()
        for f, p in frames:
            if p.startswith(("services/", "shared/")) and (key := f"{p}:{f}") not in seen:
                seen.add(key)
                inclusive[key] = inclusive.get(key, 0.0) + seconds
        package = next((name for name, _ in PACKAGES if where.startswith(name + "/")), None)
        if package is None:
            if where.startswith(("services/", "shared/")):
                package = "handoff (own frames)"
            elif where.startswith("<"):  # C code: by name, with the package calling it
                caller = next((p for _, p in reversed(frames[:-1]) if not p.startswith("<")), "")
                package = f"C {func} (from {caller.split('/', 1)[0]})"
            else:
                package = where.split("/", 1)[0]
        leaf[package] = leaf.get(package, 0.0) + seconds
        if package == "handoff (own frames)":
            own[f"{where}:{func}"] = own.get(f"{where}:{func}", 0.0) + seconds
    busy = total - idle - startup

    def rows(counter: dict[str, float], limit: int) -> list[dict[str, Any]]:
        # what wraps everything (the CLI, uvicorn, the app's outer middleware) says nothing
        kept = {k: v for k, v in counter.items() if v < 0.9 * busy}
        ranked = sorted(kept.items(), key=lambda kv: -kv[1])[:limit]
        return [
            {"name": k, "s": v, "share": v / busy if busy else 0.0, "us_per_unit": v / units * 1e6}
            for k, v in ranked
        ]

    return {
        "file": str(path),
        "unit": unit,
        "units": units,
        "sampled_s": total,
        "idle_s": idle,
        "startup_s": startup,
        "busy_s": busy,
        "busy_us_per_unit": busy / units * 1e6 if units else float("nan"),
        "handoff_functions": rows(inclusive, top),
        "by_package": rows(leaf, 25),
        "handoff_own_time": rows(own, 15),
    }


def print_profile(backend: str, summary: dict[str, Any]) -> None:
    unit = summary["unit"]
    console.print(
        f"[bold]{backend}[/bold]: pyinstrument sampled {summary['sampled_s']:.1f} s: "
        f"{summary['startup_s']:.1f} s start-up, {summary['idle_s']:.1f} s idle, "
        f"{summary['busy_s']:.1f} s serving {summary['units']:,} {unit}s = "
        f"{summary['busy_us_per_unit']:,.0f} µs per {unit} (profiler overhead included)"
    )
    for title, key in (
        ("handoff functions, inclusive", "handoff_functions"),
        ("own time by package", "by_package"),
        ("own time of handoff functions (Python lines in services/, shared/)", "handoff_own_time"),
    ):
        table = Table(title=f"{backend}: {title}")
        table.add_column("package" if key == "by_package" else "function")
        table.add_column(f"µs/{unit}", justify="right")
        table.add_column("share of busy", justify="right")
        for row in summary[key]:
            table.add_row(row["name"], f"{row['us_per_unit']:,.0f}", f"{row['share']:.0%}")
        console.print(table)


# --- report ---------------------------------------------------------------------------------


def verdicts(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base_runs = [r for r in results.get("baseline", []) if r.get("requests_per_s")]
    base = sum(r["requests_per_s"] for r in base_runs) / len(base_runs) if base_runs else None
    results["baseline_requests_per_s"] = base
    for backend in ("sqlite", "postgres"):
        r = results.get(backend)
        if not r:
            continue
        hooks = r.get("webhooks")
        if hooks and base:
            ratio = hooks["requests_per_s"] / base
            hooks["ratio_to_baseline"] = ratio
            stored = hooks["verify"]["stored"]
            out.append(
                {
                    "target": f"{backend}: webhook req/s >= {TARGET_WEBHOOK_RATIO:.0%} of bare "
                    "FastAPI, every lead stored",
                    "measured": ratio,
                    "unit": "ratio",
                    "pass": ratio >= TARGET_WEBHOOK_RATIO and stored,
                    "note": "" if stored else "leads missing or failed requests",
                }
            )
        imp = r.get("import")
        if imp:
            ok = imp.get("ok", False)
            out.append(
                {
                    "target": f"{backend}: import >= {TARGET_IMPORT_ROWS_PER_S:,.0f} rows/s into "
                    "lead.captured events",
                    "measured": imp.get("rows_per_s", 0.0),
                    "unit": "rows/s",
                    "pass": ok and imp.get("rows_per_s", 0.0) >= TARGET_IMPORT_ROWS_PER_S,
                    "note": "" if ok else "created/events != rows, or refused",
                }
            )
    return out


def _cores(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.2f}" if key in r else "-"


def report(
    results: dict[str, Any], targets: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    table = Table(
        title=f"Webhooks: signed HubSpot delivery, one new lead per request "
        f"({args.events_per_request} event(s)), {args.concurrency} in flight, {args.seconds:g} s"
    )
    for column in (
        "server",
        "req/s",
        "vs bare",
        "p50 ms",
        "p99 ms",
        "failed",
        "server CPU",
        "client CPU",
        "postgres CPU",
        "box busy",
        "stored",
    ):
        table.add_column(column, justify="left" if column == "server" else "right")
    base = results.get("baseline_requests_per_s")
    rows: list[tuple[str, dict[str, Any]]] = [
        (f"bare FastAPI + pydantic ({i + 1})", r) for i, r in enumerate(results.get("baseline", []))
    ]
    for backend, name in (
        ("sqlite", "handoff intake, SQLite"),
        ("postgres", "handoff intake, PostgreSQL"),
    ):
        if results.get(backend, {}).get("webhooks"):
            rows.append((name, results[backend]["webhooks"]))
    for name, r in rows:
        verify = r.get("verify")
        stored = "-"
        if verify:
            stored = (
                f"[green]{verify['leads_in_db']:,}/{verify['answered_ok']:,}"
                if verify["stored"]
                else f"[red]{verify['leads_in_db']:,}/{verify['answered_ok']:,}"
            )
        table.add_row(
            name,
            f"{r['requests_per_s']:,.0f}",
            f"{r['requests_per_s'] / base:.2f}" if base else "-",
            f"{r['latency_ms']['p50']:.1f}",
            f"{r['latency_ms']['p99']:.1f}",
            f"{r['total_bad']:,}",
            _cores(r, "server_cpu_cores"),
            _cores(r, "client_cpu_cores"),
            _cores(r, "postgres_cpu_cores"),
            f"{r['machine_busy']:.0%}" if "machine_busy" in r else "-",
            stored,
        )
    if rows:
        console.print(table)
    for _name, r in rows:
        for reason, n in list(r.get("errors", {}).items())[:3]:
            console.print(f"  [red]{n} x[/red] {reason}")
    imports = [
        (b, results[b]["import"])
        for b in ("sqlite", "postgres")
        if results.get(b, {}).get("import")
    ]
    if imports:
        t = Table(
            title=f"Import: {args.import_rows:,} NDJSON rows streamed to POST /v1/leads/import"
        )
        for column in (
            "database",
            "rows/s (answer)",
            "s",
            "created",
            "failed",
            "events published",
            "rows/s (published)",
            "server CPU",
            "postgres CPU",
        ):
            t.add_column(column, justify="left" if column == "database" else "right")
        for backend, r in imports:
            if r.get("status") != 200:
                t.add_row(
                    backend, f"[red]HTTP {r.get('status')}", "-", "-", "-", "-", "-", "-", "-"
                )
                continue
            t.add_row(
                backend,
                f"{r['rows_per_s']:,.0f}",
                f"{r['elapsed_s']:.2f}",
                f"{r['summary']['created']:,}",
                f"{r['summary']['failed']:,}",
                f"{r['events_published']:,}",
                f"{r['rows_per_s_to_published']:,.0f}",
                f"{r['server_cpu_cores']:.2f}",
                f"{r['postgres_cpu_cores']:.2f}",
            )
        console.print(t)
        for backend, r in imports:
            if r.get("status") != 200:
                console.print(f"  [red]{backend}: {r.get('answer')}")
    for backend in ("sqlite", "postgres"):
        check = results.get(backend, {}).get("verify_log")
        if check:
            color = "green" if check["ok"] else "red"
            console.print(
                f"{backend}: [{color}]{check['lead_captured_in_log']:,} lead.captured records "
                f"in the event log for {check['leads_in_db']:,} leads in the database"
            )
    verdict = Table(
        title="Targets" + (" (--quick: a smoke run, not a measurement)" if args.quick else "")
    )
    verdict.add_column("target")
    verdict.add_column("measured", justify="right")
    verdict.add_column("result")
    for t in targets:
        measured = (
            f"{t['measured']:.2f}" if t["unit"] == "ratio" else f"{t['measured']:,.0f} {t['unit']}"
        )
        result = "[green]PASS[/green]" if t["pass"] else "[red]MISS[/red]"
        verdict.add_row(t["target"], measured, result + (f" ({t['note']})" if t["note"] else ""))
    console.print(verdict)
    if args.profile:
        for backend in ("sqlite", "postgres"):
            if results.get(backend, {}).get("profile"):
                print_profile(backend, results[backend]["profile"])
        console.print(
            "[yellow]profiled run (pyinstrument in the server): throughput is lower and every"
            " µs figure higher than unprofiled; read the shares. Session files: "
            + ", ".join(
                results[b]["profile"]["file"] for b in ("sqlite", "postgres") if b in results
            )
        )


async def main(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {}
    started = time.perf_counter()
    backends = [b for b in ("sqlite", "postgres") if not args.only or b in args.only]
    want_baseline = not args.skip_webhooks and (not args.only or "baseline" in args.only)
    admin_url = postgres_admin_url() if "postgres" in backends else ""
    workdir = Path(tempfile.mkdtemp(prefix="handoff-bench-intake-", dir=args.workdir))
    with (
        contextlib.ExitStack() as cleanup,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        if args.keep:
            cleanup.callback(console.print, f"kept: {workdir}")
        else:
            cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        runner = Runner(args, progress, workdir)
        if want_baseline:
            results["baseline"] = [await runner.baseline("bare FastAPI (before)")]
        if "sqlite" in backends:
            url = f"sqlite+aiosqlite:///{workdir / 'sqlite' / 'intake.db'}"
            results["sqlite"] = await runner.intake("sqlite", url)
        if "postgres" in backends:
            async with FreshPgDatabase(admin_url, "intake", keep=args.keep) as url:
                results["postgres"] = await runner.intake("postgres", url)
        if want_baseline and not args.quick and backends:
            results["baseline"].append(await runner.baseline("bare FastAPI (after)"))
    targets = verdicts(results, args)
    report(results, targets, args)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    saved = write_results(
        "intake",
        {
            "benchmark": "intake",
            "config": config,
            "machine": machine(),
            "code": code_version(),
            "wall_s": time.perf_counter() - started,
            "results": results,
            "targets": targets,
        },
        stamp=args.stamp,
    )
    console.print(f"results: {saved}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=above_zero, default=10.0, help="measured load per server (10)")
    p.add_argument(
        "--warmup-seconds", type=zero_or_more, default=2.0, help="warm-up per server (2)"
    )
    p.add_argument("--concurrency", type=at_least(1), default=32, help="requests in flight (32)")
    p.add_argument(
        "--events-per-request",
        type=int,
        choices=(1, 2),
        default=2,
        help="HubSpot events per request, one contact: email (+ firstname) (2)",
    )
    p.add_argument("--import-rows", type=at_least(1), default=50_000, help="NDJSON rows (50000)")
    p.add_argument(
        "--max-body-bytes",
        type=at_least(0),
        default=0,
        help="HANDOFF_MAX_BODY_BYTES of the served intake (default 0: the service's own;\n"
        "imports have their own, larger limit)",
    )
    p.add_argument("--drain-timeout", type=above_zero, default=120.0, help="wait for the relay (s)")
    p.add_argument(
        "--only",
        action="append",
        choices=["baseline", "sqlite", "postgres"],
        help="run only these servers (repeatable)",
    )
    p.add_argument("--skip-webhooks", action="store_true", help="no webhook load (nor baseline)")
    p.add_argument("--skip-import", action="store_true", help="no import")
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the served intake under pyinstrument (pip install pyinstrument); the text\n"
        "report goes to bench/results/intake-profile-<db>-<timestamp>.txt",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s of load, 5,000 rows")
    p.add_argument("--workdir", default=None, help="where the SQLite files go (default: tmp)")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database and files")
    p.add_argument("--loadgen", help=argparse.SUPPRESS)
    p.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
        args.warmup_seconds = min(args.warmup_seconds, 0.5)
        args.import_rows = min(args.import_rows, 5_000)
    args.results_dir = ROOT / "bench" / "results"
    args.stamp = time.strftime("%Y%m%dT%H%M%S")
    return args


if __name__ == "__main__":
    # `handoff bench intake` passes no arguments: BENCH_ARGS="--quick ..." stands in for them
    argv = sys.argv[1:] or shlex.split(os.environ.get("BENCH_ARGS", ""))
    parsed = parse_args(argv)
    if parsed.loadgen:
        sys.exit(loadgen_main(parsed.loadgen))
    if parsed.serve_baseline:
        sys.exit(serve_baseline(parsed.serve_baseline))
    sys.exit(asyncio.run(main(parsed)))
