"""Intake's webhook endpoints (signature-authenticated) and the inbound-source admin API."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import QueryParams

from services.intake.delivery_batcher import DeliveryBatcher
from services.intake.inbound_sources import (
    InboundSourceIn,
    check_secret,
    create_source,
    delete_source,
    find_source,
    known_provider,
    list_sources,
)
from services.intake.providers import (
    ADAPTERS,
    InboundRequest,
    PayloadError,
    SignatureError,
    SourceConfig,
)
from services.intake.webhook_intake import Delivery
from shared.auth.principal import Principal
from shared.auth.roles import require_roles
from shared.auth.route_roles import authenticated_by_signature
from shared.direct_routes import DirectRoute
from shared.http import runtime_of
from shared.problems import Problem
from shared.runtime import ServiceRuntime
from shared.sealing import SealError
from shared.settings.services import IntakeSettings

log = structlog.get_logger(__name__)
router = APIRouter(tags=["intake: webhooks"])
Runtime = Annotated[ServiceRuntime, runtime_of("intake")]
Admin = Annotated[Principal, Depends(require_roles("admin"))]


_SOURCE_MAX = 100  # characters of the `source` query parameter
_WEBHOOK_PARAMETERS = [
    {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}},
    {
        "name": "source",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": _SOURCE_MAX},
        "description": "the inbound source's name (when a provider has several)",
    },
]


async def receive_webhook(request: Request) -> dict[str, Any]:
    """A marketing platform's webhook: verified over the raw body, then mapped and applied.

    The hot path of intake: a `DirectRoute`, it takes the bare request and reads path,
    query and headers from the ASGI scope itself. `provider` and `source` are
    documented through `openapi_extra`.
    """
    scope = request.scope
    provider: str = scope["path_params"]["provider"]
    if not known_provider(provider):
        raise Problem(
            404,
            "Unknown provider",
            f"no webhook adapter for {provider!r}; known: {', '.join(sorted(ADAPTERS))}",
            errors=[{"field": "provider", "reason": "unknown provider"}],
        )
    source = _source_param(scope.get("query_string", b""))
    if source is not None and len(source) > _SOURCE_MAX:
        raise RequestValidationError(  # exactly what a `Query(max_length=...)` answers
            [
                {
                    "type": "string_too_long",
                    "loc": ("query", "source"),
                    "msg": f"String should have at most {_SOURCE_MAX} characters",
                    "input": source,
                    "ctx": {"max_length": _SOURCE_MAX},
                }
            ]
        )
    runtime: ServiceRuntime = request.app.state.runtimes["intake"]
    config = await _cached_source(runtime, provider, source)
    if isinstance(config, str):
        raise Problem(
            404, "Unknown inbound source", config, errors=[{"field": "source", "reason": config}]
        )
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    inbound = InboundRequest(
        method=scope["method"],
        url=_public_url(request, headers),
        headers=headers,
        body=await request.body(),
    )
    adapter = ADAPTERS[provider]
    try:
        adapter.verify(inbound, config, now=datetime.now(UTC))
    except SignatureError as exc:
        raise Problem(
            401,
            "Invalid signature",
            str(exc),
            headers={"WWW-Authenticate": "Signature"},
            errors=[{"field": "signature", "reason": str(exc)}],
        ) from None
    try:
        items = adapter.parse(inbound, config)
    except PayloadError as exc:
        raise Problem(
            422, "Invalid webhook payload", str(exc), errors=[{"field": "body", "reason": str(exc)}]
        ) from None
    batcher = runtime.state.get("deliveries")
    if batcher is None:
        settings = runtime.settings
        assert isinstance(settings, IntakeSettings)
        batcher = runtime.state["deliveries"] = DeliveryBatcher(
            runtime, sales_owned=settings.sales_owned_fields
        )
    report = await batcher.apply(Delivery(items, config))
    if provider in _ONE_EVENT_A_REQUEST and report.all_invalid:
        # The request is its event, and its fields were refused: bad input, not a delivery
        # made (a 2xx would tell the sender it was). An event of a type handoff does not
        # take, or about a lead it does not know, answers 200 with the reason, as do
        # requests of several events (HubSpot's, Marketo's arrays): the good ones are kept.
        (failed,) = report.failed
        raise Problem(
            422,
            "Invalid webhook event",
            f"event {failed['delivery_id']} was not applied: {failed['reason']}",
            errors=failed["errors"],
            delivery_id=failed["delivery_id"],
        )
    return report.as_json()


# Providers whose request carries one event (the Standard Webhooks message).
_ONE_EVENT_A_REQUEST = frozenset({"standard"})


router.add_api_route(
    "/v1/webhooks/{provider}",
    receive_webhook,
    methods=["POST"],
    dependencies=[Depends(authenticated_by_signature)],
    responses={401: {}, 404: {}, 422: {}},
    openapi_extra={"parameters": _WEBHOOK_PARAMETERS},
    route_class_override=DirectRoute,
)


_SOURCES_BY_QUERY: dict[bytes, str | None] = {}


def _source_param(query: bytes) -> str | None:
    """The `source` query parameter as FastAPI reads it (the last one wins), remembered per
    query string: a platform posts to one URL, and parsing it cost more than verifying it."""
    if not query:
        return None
    try:
        return _SOURCES_BY_QUERY[query]
    except KeyError:
        pass
    source = QueryParams(query).get("source")
    if len(_SOURCES_BY_QUERY) >= 1024:  # bounded: any client can choose query strings
        _SOURCES_BY_QUERY.clear()
    _SOURCES_BY_QUERY[query] = source
    return source


SOURCE_TTL = 5.0  # seconds: other replicas see a changed source within this time


async def _cached_source(
    runtime: ServiceRuntime, provider: str, name: str | None
) -> SourceConfig | str:
    """The inbound source (or why there is none), from a short-lived per-process cache."""
    cache: dict[tuple[str, str | None], tuple[float, SourceConfig | str]] = (
        runtime.state.setdefault("sources", {})
    )
    now = time.monotonic()
    hit = cache.get((provider, name))
    if hit is not None and hit[0] > now:
        return hit[1]
    async with runtime.db.engine.connect() as conn:
        try:
            found = await find_source(conn, provider, name, runtime.settings.sealer())
        except SealError as exc:
            # The operator's to fix, not the sender's: a 5xx, which platforms retry.
            log.error("inbound source unusable", provider=provider, source=name, reason=str(exc))
            raise Problem(
                503,
                "Inbound source unusable",
                f"the source's stored secret cannot be read: {exc}",
                errors=[{"field": "source", "reason": str(exc)}],
            ) from None
    cache[(provider, name)] = (now + SOURCE_TTL, found)
    return found


def _public_url(request: Request, headers: dict[str, str]) -> str:
    """The URL as the sender signed it: forwarded scheme and host, raw path and query.
    Proxies in a chain each append theirs to `X-Forwarded-*`: the first is the sender's."""
    scope = request.scope
    scheme = headers.get("x-forwarded-proto")
    scheme = scope["scheme"] if scheme is None else scheme.split(",")[0].strip()
    host = headers.get("x-forwarded-host")
    if host is not None:
        host = host.split(",")[0].strip()
    else:
        host = headers.get("host")
        if host is None:
            host = request.url.netloc
    raw_path = scope.get("raw_path")
    path = (request.url.path.encode() if raw_path is None else raw_path).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


@router.post("/v1/inbound-sources", status_code=201, responses={409: {}, 422: {}})
async def add_source(body: InboundSourceIn, runtime: Runtime, who: Admin) -> dict[str, Any]:
    """Configure a platform that may post webhooks (its secret is stored, never returned)."""
    if (problem := check_secret(body)) is not None:
        raise Problem(
            422,
            "Invalid request",
            f"secret: {problem}",
            errors=[{"field": "secret", "reason": problem}],
        )
    try:
        async with runtime.db.transaction() as session:
            await create_source(session, body, runtime.settings.sealer())
        runtime.state.pop("sources", None)
    except IntegrityError:
        raise Problem(409, "Conflict", f"an inbound source named {body.name!r} exists") from None
    return {"name": body.name, "webhook_path": f"/v1/webhooks/{body.provider}?source={body.name}"}


@router.get("/v1/inbound-sources")
async def sources(runtime: Runtime, who: Admin) -> list[dict[str, Any]]:
    """Configured inbound sources (without their secrets)."""
    async with runtime.db.engine.connect() as conn:
        return await list_sources(conn)


@router.delete("/v1/inbound-sources/{name}", status_code=204, responses={404: {}})
async def remove_source(name: str, runtime: Runtime, who: Admin) -> Response:
    """Stop accepting webhooks from a source."""
    async with runtime.db.transaction() as session:
        removed = await delete_source(session, name)
    runtime.state.pop("sources", None)
    if not removed:
        raise Problem(
            404,
            "Not Found",
            f"no inbound source {name!r}",
            errors=[{"field": "name", "reason": "no such inbound source"}],
        )
    return Response(status_code=204)
