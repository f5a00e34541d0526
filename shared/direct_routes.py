"""Direct routes: hot routes answered straight from the request shell, ahead of the framework."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth.route_roles import authenticated_by_signature
from shared.problems import problem_of
from shared.request_shell import RequestShell, send_json, send_problem


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


class ServedApp(FastAPI):
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


def verifies_itself(route: DirectRoute) -> bool:
    """Whether the route's only dependency is `authenticated_by_signature` (a marker: a
    role, a limiter or anything else declared would not run on a direct route)."""
    dependencies = route.dependant.dependencies
    return (
        len(dependencies) == 1
        and dependencies[0].call is authenticated_by_signature
        and not dependencies[0].dependencies
    )


def direct_endpoint(route: DirectRoute) -> ASGIApp:
    """`route`'s endpoint as an ASGI app: its dict as JSON, its known errors as problems
    (anything else propagates to the shell: a logged 500)."""
    endpoint, status = route.endpoint, route.status_code or 200

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            content = await endpoint(Request(scope, receive, send))
        except Exception as exc:
            if (problem := problem_of(exc)) is None:
                raise
            await send_problem(send, problem, scope)
            return
        await send_json(send, status, orjson.dumps(content), b"application/json")

    return app
