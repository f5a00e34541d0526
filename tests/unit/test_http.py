"""The HTTP shell every service shares: problem details, body limits, roles, health."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import BaseModel, EmailStr
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from shared.auth.principal import Principal
from shared.auth.roles import require_roles
from shared.auth.route_roles import authenticated_by_signature, routes_without_roles
from shared.auth.token_store import TokenStore
from shared.bus.local import LocalBus
from shared.direct_routes import DirectRoute
from shared.http import build_app
from shared.problems import Problem, install_problem_handlers
from shared.runtime import ServiceDefinition, ServiceRuntime
from shared.settings.loading import load_settings
from tests import support

router = APIRouter()


class Signup(BaseModel):
    email: EmailStr
    company_size: int


@router.post("/v1/signups", status_code=201)
async def create_signup(
    body: Signup, who: Annotated[Principal, Depends(require_roles("marketing", "integration"))]
) -> dict[str, str]:
    """Echo the caller: enough to exercise validation, auth and limits."""
    return {"email": body.email, "actor": who.id}


@router.get("/v1/broken")
async def broken(who: Annotated[Principal, Depends(require_roles("viewer"))]) -> None:
    """Fails as a bug would."""
    raise RuntimeError("a bug")


async def direct(request: Request) -> dict[str, Any]:
    """A direct route: its name says what to do (answer, or fail one way or another)."""
    name = request.scope["path_params"]["name"]
    body = await request.body()
    if name.startswith("refused"):
        raise Problem(401, "Invalid signature", "no", headers={"WWW-Authenticate": "Signature"})
    if name == "invalid":
        raise RequestValidationError(
            [{"type": "string_too_long", "loc": ("query", "source"), "msg": "too long"}]
        )
    if name == "bug":
        raise RuntimeError("a bug")
    return {"name": name, "bytes": len(body)}


router.add_api_route(
    "/v1/direct/{name}",
    direct,
    methods=["POST"],
    status_code=202,
    dependencies=[Depends(authenticated_by_signature)],
    route_class_override=DirectRoute,
)


@pytest.fixture
def tokens(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


def served(tmp_path: Path, tokens: TokenStore, routers: list[APIRouter]) -> FastAPI:
    """`build_app` for one service with these routers."""
    settings = load_settings("intake", data_dir=tmp_path, env="dev")
    definition = ServiceDefinition(
        name="intake",
        metadata=support.metadata,
        outbox_tables=support.outbox_tables,
        inbox_table=support.inbox_table,
        migrations=tmp_path,
        routers=routers,
    )
    bus = LocalBus(tmp_path / "events.db")
    runtime = ServiceRuntime(definition=definition, settings=settings, bus=bus)
    app = build_app([runtime], title="t", token_store=tokens, max_body_bytes=2048)
    asyncio.run(support.create_schema(runtime.db, dispose=True))
    return app


@pytest.fixture
def client(tmp_path: Path, tokens: TokenStore) -> Iterator[TestClient]:
    with TestClient(served(tmp_path, tokens, [router])) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_invalid_body_is_a_422_problem_naming_each_field(
    client: TestClient, tokens: TokenStore
) -> None:
    token = tokens.create(name="mops", role="marketing")
    response = client.post(
        "/v1/signups", json={"email": "nope", "company_size": "big"}, headers=bearer(token)
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert {e["field"] for e in problem["errors"]} == {"email", "company_size"}
    assert problem["status"] == 422
    assert "email" in problem["detail"]


def test_missing_token_is_401_and_wrong_role_is_403(client: TestClient, tokens: TokenStore) -> None:
    viewer = tokens.create(name="board", role="viewer")
    body = {"email": "ana@example.com", "company_size": 50}

    anonymous = client.post("/v1/signups", json=body)
    forbidden = client.post("/v1/signups", json=body, headers=bearer(viewer))
    unknown = client.post("/v1/signups", json=body, headers=bearer("hnd_made_up"))

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert unknown.status_code == 401
    assert unknown.headers["www-authenticate"] == "Bearer"
    assert [e["reason"] for e in anonymous.json()["errors"]] == ["missing bearer token"]
    assert [e["reason"] for e in unknown.json()["errors"]] == ["unknown or revoked token"]
    assert forbidden.status_code == 403
    assert "viewer" in forbidden.json()["detail"]


def test_an_allowed_role_and_admin_get_through(client: TestClient, tokens: TokenStore) -> None:
    body = {"email": "ana@example.com", "company_size": 50}
    for name, role in (("hubspot-sync", "integration"), ("root", "admin")):
        response = client.post(
            "/v1/signups", json=body, headers=bearer(tokens.create(name=name, role=role))
        )
        assert response.status_code == 201
        assert response.json()["actor"] == name


def test_a_revoked_token_stops_working(client: TestClient, tokens: TokenStore) -> None:
    token = tokens.create(name="temp", role="marketing")
    tokens.revoke("temp")
    response = client.post(
        "/v1/signups", json={"email": "a@b.co", "company_size": 1}, headers=bearer(token)
    )
    assert response.status_code == 401


def test_a_token_file_spoiled_while_serving_leaves_the_last_good_tokens_working(
    client: TestClient, tokens: TokenStore
) -> None:
    token = tokens.create(name="crm", role="integration")
    body = {"email": "a@b.co", "company_size": 1}
    assert client.post("/v1/signups", json=body, headers=bearer(token)).status_code == 201
    tokens.path.write_text('{"tokens": [')

    response = client.post("/v1/signups", json=body, headers=bearer(token))

    assert response.status_code == 201
    assert response.json()["actor"] == "crm"


def test_a_token_file_unreadable_from_the_start_is_a_503_until_it_is_fixed(
    client: TestClient, tokens: TokenStore
) -> None:
    tokens.path.write_text("[]")
    body = {"email": "a@b.co", "company_size": 1}

    response = client.post("/v1/signups", json=body, headers=bearer("hnd_anything"))

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "token file" in response.json()["detail"]
    assert str(tokens.path) not in response.text  # (the log says which file, not the caller)
    tokens.path.unlink()
    token = tokens.create(name="crm", role="integration")
    assert client.post("/v1/signups", json=body, headers=bearer(token)).status_code == 201


def test_tokens_are_stored_only_as_hashes(tokens: TokenStore) -> None:
    token = tokens.create(name="crm", role="integration")
    stored = tokens.path.read_text()
    assert token not in stored
    assert token.startswith("hnd_")
    assert len(token) > 40
    assert oct(tokens.path.stat().st_mode & 0o777) == "0o600"


def test_an_oversized_body_is_refused_with_413(client: TestClient, tokens: TokenStore) -> None:
    token = tokens.create(name="big", role="marketing")
    response = client.post(
        "/v1/signups",
        content=b'{"email": "' + b"a" * 4096 + b'"}',
        headers={**bearer(token), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["title"] == "Content Too Large"


def test_an_oversized_streamed_body_is_refused_with_413(
    client: TestClient, tokens: TokenStore
) -> None:
    token = tokens.create(name="stream", role="marketing")

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = client.post(
        "/v1/signups",
        content=chunks(),
        headers={**bearer(token), "content-type": "application/json"},
    )
    assert response.status_code == 413


def test_unknown_paths_are_404_problems(client: TestClient) -> None:
    response = client.get("/v1/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_health_readiness_and_metrics_answer(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["checks"]["intake"] == {"database": "ok", "bus": "ok"}
    client.get("/healthz")
    metrics = client.get("/metrics").text
    assert 'handoff_http_requests_total{method="GET",route="/healthz",service="intake"' in metrics
    assert "handoff_outbox_backlog" in metrics


def test_a_route_without_declared_roles_is_caught() -> None:
    loose = APIRouter()

    @loose.get("/v1/secrets")
    async def secrets() -> dict[str, str]:
        return {}

    assert routes_without_roles(loose.routes) == ["GET /v1/secrets"]
    assert routes_without_roles(router.routes) == []


def test_an_app_refuses_routes_without_declared_roles(tmp_path: Path, tokens: TokenStore) -> None:
    loose = APIRouter()

    @loose.get("/v1/secrets")
    async def secrets() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="GET /v1/secrets"):
        served(tmp_path, tokens, [router, loose])


async def limiter() -> None:
    """A dependency without a role (a rate limiter, say)."""


@pytest.mark.parametrize(
    "dependencies",
    [
        [Depends(require_roles("admin"))],
        [Depends(require_roles("admin")), Depends(authenticated_by_signature)],
        [Depends(authenticated_by_signature), Depends(limiter)],
    ],
    ids=["a role", "a role and the marker", "the marker and another"],
)
def test_a_direct_route_must_verify_its_callers_itself(
    tmp_path: Path, tokens: TokenStore, dependencies: list[Any]
) -> None:
    """A direct route runs no dependencies: one it declared would not be checked."""
    guarded = APIRouter()
    guarded.add_api_route(
        "/v1/guarded",
        direct,
        methods=["POST"],
        dependencies=dependencies,
        route_class_override=DirectRoute,
    )
    with pytest.raises(RuntimeError, match="/v1/guarded"):
        served(tmp_path, tokens, [guarded])


def test_an_app_refuses_routers_inside_a_services_router(
    tmp_path: Path, tokens: TokenStore
) -> None:
    """Their routes would escape the checks above."""
    outer, inner = APIRouter(), APIRouter()

    @inner.get("/v1/hidden")
    async def hidden() -> dict[str, str]:
        return {}

    outer.include_router(inner)
    with pytest.raises(RuntimeError, match="list their routes themselves"):
        served(tmp_path, tokens, [router, outer])


def test_responses_continue_the_callers_trace(client: TestClient) -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = client.get("/healthz", headers={"traceparent": caller})
    assert response.headers["traceparent"].split("-")[1] == caller.split("-")[1]


def test_an_unexpected_error_is_a_500_problem_in_the_callers_trace(
    client: TestClient, tokens: TokenStore
) -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    token = tokens.create(name="v", role="viewer")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = client.get("/v1/broken", headers={**bearer(token), "traceparent": caller})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 500 and "a bug" not in response.text
    assert response.headers["traceparent"].split("-")[1] == caller.split("-")[1]
    (logged,) = [entry for entry in logs if entry["event"] == "unhandled error"]
    assert logged["trace_id"] == caller.split("-")[1]


def test_a_direct_route_is_answered_without_the_frameworks_stack(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    framework = app.build_middleware_stack()
    served: list[str] = []

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        served.append(scope["path"])
        await framework(scope, receive, send)

    app.middleware_stack = counting
    assert client.post("/v1/direct/ok", content=b"abc").json() == {"name": "ok", "bytes": 3}
    assert client.get("/v1/direct/ok").status_code == 405  # a wrong method: the router's
    assert client.get("/healthz").status_code == 200
    assert served == ["/v1/direct/ok", "/healthz"]


@pytest.mark.parametrize("name", ["ok", "refused", "refused%3Fin%23path", "invalid"])
def test_a_direct_route_answers_as_the_framework_would(client: TestClient, name: str) -> None:
    plain = FastAPI()
    install_problem_handlers(plain)
    plain.include_router(router)
    with TestClient(plain) as framework:
        expected = framework.post(f"/v1/direct/{name}", content=b"abc")
    served = client.post(f"/v1/direct/{name}", content=b"abc")

    assert expected.status_code == {"ok": 202, "invalid": 422}.get(name, 401)
    assert (served.status_code, served.content) == (expected.status_code, expected.content)
    for header in ("content-type", "content-length", "www-authenticate"):
        assert served.headers.get(header) == expected.headers.get(header)


def test_a_direct_route_goes_through_the_shell(client: TestClient) -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    answered = client.post("/v1/direct/ok", content=b"x", headers={"traceparent": caller})
    assert answered.headers["traceparent"].split("-")[1] == caller.split("-")[1]

    declared = client.post("/v1/direct/ok", content=b"x" * 4096)
    streamed = client.post("/v1/direct/ok", content=iter([b"x" * 1000] * 10))
    for refused in (declared, streamed):
        assert refused.status_code == 413
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["field"] == "body"

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        failed = client.post("/v1/direct/bug", headers={"traceparent": caller})
    assert failed.status_code == 500 and "a bug" not in failed.text
    assert failed.headers["content-type"] == "application/problem+json"
    (logged,) = [entry for entry in logs if entry["event"] == "unhandled error"]
    assert logged["trace_id"] == caller.split("-")[1]

    metrics = client.get("/metrics").text
    for status in ("202", "413", "500"):
        assert (
            f'handoff_http_requests_total{{method="POST",route="/v1/direct/{{name}}",'
            f'service="intake",status="{status}"}}'
        ) in metrics
