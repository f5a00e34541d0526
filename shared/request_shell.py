"""RequestShell: what every HTTP request goes through (body limit, trace context, metrics),
and the bare ASGI answers it sends."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import Any

import orjson
import structlog
from starlette.datastructures import URL
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.observability import metrics
from shared.observability.tracing import Span, continue_trace, current_traceparent, trace_id_of
from shared.problems import PROBLEM_JSON, Problem, unexpected_error


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
        declared, incoming = _declared_length_and_traceparent(scope)
        if declared is not None and declared.isdigit() and int(declared) <= limit:
            pass  # the server reads no more than declared
        elif declared is not None and declared.isdigit():
            await self._reject(scope, send, limit)
            return
        else:
            receive = _limited(receive, limit)
        start = time.perf_counter()
        traceparent, token = _enter_trace(incoming)
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
            await send_problem(send_wrapper, problem, scope)
        finally:
            _leave_trace(token)
            self._count(scope, status, start)

    def _count(self, scope: Scope, status: int, start: float) -> None:
        """Count and time a request (`start`ed then) by method, route template and status."""
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
        await send_problem(send, problem, scope)


async def send_problem(send: Send, problem: Problem, scope: Scope) -> None:
    """Send `problem` as the whole answer (problem+json), as the app's handlers would."""
    body = orjson.dumps(problem.body(URL(scope=scope).path))  # as `request.url.path`
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()]
    await send_json(send, problem.status, body, PROBLEM_JSON.encode(), extra)


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send `body` as the whole answer, with its length and type."""
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


def _declared_length_and_traceparent(scope: Scope) -> tuple[bytes | None, str]:
    """The request's `Content-Length` (None when not declared) and `traceparent` ("" when
    none), in one pass over its headers."""
    declared: bytes | None = None
    incoming = ""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            declared = value
        elif name == b"traceparent":
            incoming = value.decode("latin-1")
    return declared, incoming


def _enter_trace(incoming: str) -> tuple[str, Token[str | Span | None]]:
    """The request's traceparent (the caller's trace continued, or a new one), made current
    for logs and the events emitted; the token puts the previous one back."""
    traceparent = continue_trace(incoming)
    token = current_traceparent.set(traceparent)
    structlog.contextvars.bind_contextvars(trace_id=trace_id_of(traceparent))
    return traceparent, token


def _leave_trace(token: Token[str | Span | None]) -> None:
    """Put back the trace that was current before `_enter_trace`."""
    current_traceparent.reset(token)
    structlog.contextvars.unbind_contextvars("trace_id")


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
