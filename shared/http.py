"""The HTTP shell around one or more services: errors, limits, auth, health, metrics."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import URL
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import TokenStore, authenticated_by_signature, routes_without_roles
from shared.bus.port import Bus
from shared.events.asyncapi import asyncapi_document
from shared.observability import metrics
from shared.observability.tracing import continue_trace, current_traceparent, trace_id_of
from shared.problems import (
    PROBLEM_JSON,
    Problem,
    install_problem_handlers,
    problem_of,
    unexpected_error,
)
from shared.runtime import ServiceRuntime

VERSION = "0.1.0"


def build_app(
    runtimes: Sequence[ServiceRuntime],
    *,
    title: str,
    token_store: TokenStore,
    max_body_bytes: int,
    shared_bus: Bus | None = None,
) -> FastAPI:
    """One FastAPI app serving the routes of `runtimes` (one service, or all in dev mode).

    Args:
        runtimes: the services this process runs.
        title: the OpenAPI title.
        token_store: where bearer tokens are verified.
        max_body_bytes: larger request bodies get 413.
        shared_bus: a bus the runtimes share (dev mode); started first, closed last.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started: list[ServiceRuntime] = []
        if shared_bus is not None:
            await shared_bus.start()
        try:
            for runtime in runtimes:
                await runtime.start()
                started.append(runtime)
            # Everything allocated at startup lives as long as the process: keep it out of
            # the collector's full passes, which otherwise pause the loop for tens of ms.
            gc.collect()
            gc.freeze()
            yield
        finally:
            for runtime in reversed(started):
                await runtime.stop()
            if shared_bus is not None:
                await shared_bus.close()

    app = _ServedApp(
        title=title,
        version=VERSION,
        lifespan=lifespan,
        description="handoff: the shared lead pipeline for marketing and sales.",
    )
    app.state.runtimes = {r.name: r for r in runtimes}
    app.state.token_store = token_store
    install_problem_handlers(app)
    routes = []
    for runtime in runtimes:
        for router in runtime.definition.routers:
            app.include_router(router)  # (without a prefix: a route's path is its own)
            routes += router.routes
    # The checks read the routers' own routes: FastAPI lists an included router as one
    # object, whose routes `app.routes` does not show. A router inside a service's router
    # would hide its routes from them too, so there must be none.
    if nested := [type(route).__name__ for route in routes if not hasattr(route, "path")]:
        raise RuntimeError(f"service routers must list their routes themselves: {nested}")
    if undeclared := routes_without_roles(routes):
        raise RuntimeError(f"routes without declared roles: {', '.join(undeclared)}")
    direct = [route for route in routes if isinstance(route, DirectRoute)]
    if unverified := [route.path for route in direct if not _verifies_itself(route)]:
        raise RuntimeError(
            "direct routes run no dependencies: their one dependency must say that they "
            f"verify their callers themselves (authenticated_by_signature): {unverified}"
        )
    _add_operational_routes(app, runtimes)
    label = runtimes[0].name if len(runtimes) == 1 else "all"
    limits = {p: n for r in runtimes for p, n in r.definition.body_limits.items()}
    shell: dict[str, Any] = {"service": label, "max_bytes": max_body_bytes, "per_path": limits}
    app.add_middleware(RequestShell, **shell)
    app.direct = tuple((route, _direct_endpoint(route)) for route in direct)
    # the shell of direct routes: `serve` is handed each one's endpoint (its own `app`, the
    # router, is what a request through `__call__` would go on to)
    app.direct_shell = RequestShell(app.router, **shell)
    return app


class DirectRoute(APIRoute):
    """A hot route answered straight from the request shell, ahead of the framework.

    On intake's webhook route, the framework's share of a request (the middleware stack,
    routing over every route, the request handler resolving dependencies and parameters,
    the response objects) cost more than verifying and applying the webhook: served
    directly, PostgreSQL webhooks went from 3,096-3,271 to 3,685-4,026 requests a second
    (alternating runs; bench/README.md).

    Its endpoint takes the bare `Request` and returns a JSON-able dict. The app that
    `build_app` makes matches these routes first and answers them through the same
    `RequestShell` as every request (body limit, trace, metrics): the dict as JSON with the
    route's status code; a `Problem`, validation or HTTP error as the problem document the
    app's handlers would send. Nothing else of the framework runs: no dependencies (so
    `build_app` takes only routes whose endpoint verifies its caller itself, marked
    `authenticated_by_signature`), no other middleware, and the scope has none of the
    keys the router adds but `route`, `endpoint` and `path_params`. The route is still an
    `APIRoute`: it is documented (its declared dependency and `openapi_extra` say who may
    call it and how), and any other app serves it the framework's way, with the same
    answers.
    """


class _ServedApp(FastAPI):
    """FastAPI, with its `DirectRoute`s answered before its middleware stack."""

    direct: tuple[tuple[DirectRoute, ASGIApp], ...] = ()
    direct_shell: RequestShell | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.direct_shell is not None:
            for route, endpoint in self.direct:
                match, child = route.matches(scope)
                if match is Match.FULL:  # (a wrong method goes on: the router says 405)
                    scope["app"] = self
                    scope.update(child)
                    await self.direct_shell.serve(scope, receive, send, endpoint)
                    return
        await super().__call__(scope, receive, send)


def _verifies_itself(route: DirectRoute) -> bool:
    """Whether the route's only dependency is `authenticated_by_signature` (a marker: a
    role, a limiter or anything else declared would not run on a direct route)."""
    dependencies = route.dependant.dependencies
    return (
        len(dependencies) == 1
        and dependencies[0].call is authenticated_by_signature
        and not dependencies[0].dependencies
    )


def _direct_endpoint(route: DirectRoute) -> ASGIApp:
    """`route`'s endpoint as an ASGI app: its dict as JSON, its known errors as problems
    (anything else propagates to the shell: a logged 500)."""
    endpoint, status = route.endpoint, route.status_code or 200

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            content = await endpoint(Request(scope, receive, send))
        except Exception as exc:
            if (problem := problem_of(exc)) is None:
                raise
            await _send_problem(send, problem, scope)
            return
        await _send_json(send, status, orjson.dumps(content), b"application/json")

    return app


def runtime_of(service: str) -> Any:
    """A dependency returning one service's runtime from the app serving it."""

    async def get(request: Request) -> ServiceRuntime:  # async: no thread-pool hop
        runtime: ServiceRuntime = request.app.state.runtimes[service]
        return runtime

    return Depends(get)


def _add_operational_routes(app: FastAPI, runtimes: Sequence[ServiceRuntime]) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Ready: every service's database and the bus answer."""
        checks = {r.name: await r.readiness() for r in runtimes}
        ready = all(v == "ok" for c in checks.values() for v in c.values())
        if ready:
            return JSONResponse({"status": "ready", "checks": checks})
        body = Problem(
            503, "Service Unavailable", "a dependency is not reachable", checks=checks
        ).body("/readyz")
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)

    @app.get("/asyncapi.json", tags=["operations"])
    async def asyncapi() -> dict[str, Any]:
        """The event catalog (AsyncAPI 3.0), generated from the payload models."""
        return asyncapi_document(runtimes[0].catalog, version=VERSION)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        for runtime in runtimes:
            await runtime.update_gauges()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class RequestShell:
    """What every request goes through, in one ASGI layer (one layer each cost more than
    what they do): the body size limit, the W3C trace context, and request metrics.

    - Bodies over the limit get 413 (problem+json): a declared `Content-Length` at once
      (before anything else: no trace header, not counted), a streamed body as it goes
      over (`ContentTooLarge`, rendered by the app like any error). A body whose declared
      length is within the limit needs no counting: the server reads no more than that.
    - The caller's trace is continued (or one starts) for logs and the events emitted; the
      answer carries its `traceparent`.
    - Requests are counted and timed by route template (bounded label values).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        max_bytes: int,
        per_path: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        # (method, route, status) -> the metrics' children: `labels()` takes a lock and
        # builds a key on every call
        self._metrics: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.serve(scope, receive, send, self.app)

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Answer an HTTP request through `app` (the next layer, or a direct route)."""
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        declared: bytes | None = None
        incoming = ""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
            elif name == b"traceparent":
                incoming = value.decode("latin-1")
        if declared is not None and declared.isdigit() and int(declared) <= limit:
            pass  # the server reads no more than declared
        elif declared is not None and declared.isdigit():
            await self._reject(scope, send, limit)
            return
        else:
            receive = _limited(receive, limit)
        start = time.perf_counter()
        traceparent = continue_trace(incoming)
        token = current_traceparent.set(traceparent)
        structlog.contextvars.bind_contextvars(trace_id=trace_id_of(traceparent))
        header = (b"traceparent", traceparent.encode())
        status = 500

        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        except Exception:
            if started:
                raise  # (the server closes the connection: nothing else can be said)
            # An unexpected error is answered here, still inside the request's trace: its
            # log line carries the trace id and the 500 its traceparent, which the outer
            # error layer, after this one, could not give them.
            problem = unexpected_error(scope.get("path", ""))
            await _send_problem(send_wrapper, problem, scope)
        finally:
            current_traceparent.reset(token)
            structlog.contextvars.unbind_contextvars("trace_id")
            route = scope.get("route")
            key = (scope.get("method", "GET"), getattr(route, "path", "unmatched"), str(status))
            children = self._metrics.get(key)
            if children is None:
                if len(self._metrics) >= 4096:  # bounded (routes x methods x statuses)
                    self._metrics.clear()
                children = self._metrics[key] = (
                    metrics.HTTP_REQUESTS.labels(self.service, *key),
                    metrics.HTTP_DURATION.labels(self.service, key[0], key[1]),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - start)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        reason = f"the request body exceeds the limit of {limit} bytes"
        problem = Problem(
            413, "Content Too Large", reason, errors=[{"field": "body", "reason": reason}]
        )
        await _send_problem(send, problem, scope)


async def _send_problem(send: Send, problem: Problem, scope: Scope) -> None:
    body = orjson.dumps(problem.body(URL(scope=scope).path))  # as `request.url.path`
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()]
    await _send_json(send, problem.status, body, PROBLEM_JSON.encode(), extra)


async def _send_json(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *headers,
                (b"content-length", str(len(body)).encode()),
                (b"content-type", content_type),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising `ContentTooLarge` once the body read goes over `limit` bytes."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise ContentTooLarge(limit)
        return message

    return limited_receive


class ContentTooLarge(StarletteHTTPException):
    """A streamed body went over the limit; rendered as a 413 problem by the app."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body exceeds the limit of {max_bytes} bytes")
