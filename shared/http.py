"""The HTTP app around one or more services: their checked routes behind the request shell
(errors, limits, auth), health and metrics."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.auth.route_roles import routes_without_roles
from shared.auth.token_store import TokenStore
from shared.bus.port import Bus
from shared.direct_routes import DirectRoute, ServedApp, direct_endpoint, verifies_itself
from shared.events.asyncapi import asyncapi_document
from shared.problems import PROBLEM_JSON, Problem, install_problem_handlers
from shared.request_shell import RequestShell
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
    app = ServedApp(
        title=title,
        version=VERSION,
        lifespan=_lifespan(runtimes, shared_bus),
        description="handoff: the shared lead pipeline for marketing and sales.",
    )
    app.state.runtimes = {r.name: r for r in runtimes}
    app.state.token_store = token_store
    install_problem_handlers(app)
    direct = _include_checked_routers(app, runtimes)
    _add_operational_routes(app, runtimes)
    _add_request_shell(app, runtimes, max_body_bytes, direct)
    return app


def _lifespan(
    runtimes: Sequence[ServiceRuntime], shared_bus: Bus | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the shared bus, then the runtimes, started; stopped in reverse."""

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

    return lifespan


def _include_checked_routers(app: FastAPI, runtimes: Sequence[ServiceRuntime]) -> list[DirectRoute]:
    """Include every service's routers in `app`, check their routes, and return the direct ones."""
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
    if unverified := [route.path for route in direct if not verifies_itself(route)]:
        raise RuntimeError(
            "direct routes run no dependencies: their one dependency must say that they "
            f"verify their callers themselves (authenticated_by_signature): {unverified}"
        )
    return direct


def _add_request_shell(
    app: ServedApp,
    runtimes: Sequence[ServiceRuntime],
    max_body_bytes: int,
    direct: list[DirectRoute],
) -> None:
    """Put `app`'s routes behind a `RequestShell`, and its direct routes ahead of the rest."""
    label = runtimes[0].name if len(runtimes) == 1 else "all"
    limits = {p: n for r in runtimes for p, n in r.definition.body_limits.items()}
    shell: dict[str, Any] = {"service": label, "max_bytes": max_body_bytes, "per_path": limits}
    app.add_middleware(RequestShell, **shell)
    app.direct = tuple((route, direct_endpoint(route)) for route in direct)
    # the shell of direct routes: `serve` is handed each one's endpoint (its own `app`, the
    # router, is what a request through `__call__` would go on to)
    app.direct_shell = RequestShell(app.router, **shell)


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
