"""What a stranger reaches on each app, in-process: every operator route checks the key before
it reads a body (401, never a 422 about the body), and no app serves its API description
(``/docs``, ``/redoc``, ``/openapi.json``) unless the orchestrator is told to, behind the key."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from conftest import API_KEY, OPERATOR, TEST_AGENT, free_port
from switchboard.agent.config import load_agent_config
from switchboard.http.auth import require_api_key, require_caller_data_key
from switchboard.settings import Settings

MALFORMED = {"content": b'{"to": "+1555', "headers": {"Content-Type": "application/json"}}
DOC_PATHS = ["/docs", "/redoc", "/openapi.json"]


def settings_for(tmp_path: Path, **overrides) -> Settings:
    return Settings(
        api_keys=API_KEY,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing there: rate limits let requests pass
        database_url=f"sqlite:///{tmp_path}/calls.db",
        recordings_url=str(tmp_path / "recordings"),
        **overrides,
    )


def orchestrator(settings: Settings) -> FastAPI:
    from switchboard.orchestrator.app import create_orchestrator_app

    return create_orchestrator_app(settings)


def pooled_worker(settings: Settings) -> FastAPI:
    from switchboard.worker.app import create_worker_app
    from switchboard.worker.service import WorkerService

    agent = load_agent_config(TEST_AGENT)
    service = WorkerService(settings, agent, worker_id="surface-w1", media_url="http://127.0.0.1:1")
    return create_worker_app(settings, agent, service)


def standalone_worker(settings: Settings) -> FastAPI:
    from switchboard.worker.app import create_worker_app

    return create_worker_app(settings, load_agent_config(TEST_AGENT))


APPS: dict[str, Callable[[Settings], FastAPI]] = {
    "orchestrator": orchestrator,
    "pooled-worker": pooled_worker,
    "standalone-worker": standalone_worker,
}


@pytest.fixture(params=list(APPS))
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FastAPI]:
    yield APPS[request.param](settings_for(tmp_path))  # no lifespan: nothing here needs models


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def api_routes(routes: list) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from api_routes(included.routes)  # FastAPI 0.16x keeps an included router whole


def operator_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every route that needs an operator key."""
    guarded = []
    for route in api_routes(app.routes):
        calls = {d.call for d in route.dependant.dependencies}
        if calls & {require_api_key, require_caller_data_key}:
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            guarded += [(method, path) for method in sorted(route.methods)]
    return guarded


async def test_every_operator_route_refuses_a_stranger_before_reading_the_body(app: FastAPI) -> None:
    routes = operator_routes(app)
    assert ("GET", "/metrics") in routes  # the walk found the app's operator routes
    async with client(app) as http:
        for method, path in routes:
            for headers in ({}, {"X-API-Key": "wrong"}):
                response = await http.request(
                    method, path, content=MALFORMED["content"], headers={**MALFORMED["headers"], **headers}
                )
                assert response.status_code == 401, (method, path, response.status_code, response.text)
                assert "operator key" in response.json()["detail"]


@pytest.mark.parametrize(
    ("build", "path"),
    [(orchestrator, "/manual/dispatch"), (orchestrator, "/calls"), (standalone_worker, "/calls")],
    ids=["manual-dispatch", "outbound-call", "worker-outbound-call"],
)
async def test_with_the_key_a_malformed_body_is_still_judged(tmp_path: Path, build, path: str) -> None:
    async with client(build(settings_for(tmp_path))) as http:
        response = await http.post(path, content=MALFORMED["content"], headers={**MALFORMED["headers"], **OPERATOR})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


async def test_public_routes_need_no_key(tmp_path: Path) -> None:
    async with client(orchestrator(settings_for(tmp_path))) as http:
        assert (await http.get("/health/live")).status_code == 200
        offer = await http.post("/webrtc/offer", content=MALFORMED["content"], headers=MALFORMED["headers"])
        assert offer.status_code == 422  # a public route parses its body as before


async def test_no_app_describes_its_api_by_default(app: FastAPI) -> None:
    async with client(app) as http:
        for path in DOC_PATHS:
            for headers in ({}, OPERATOR):
                assert (await http.get(path, headers=headers)).status_code == 404, path


async def test_the_orchestrator_describes_its_api_only_when_told_and_only_with_the_key(tmp_path: Path) -> None:
    app = orchestrator(settings_for(tmp_path, api_docs=True))
    async with client(app) as http:
        for path in DOC_PATHS:
            assert (await http.get(path)).status_code == 401, path
        described = await http.get("/openapi.json", headers=OPERATOR)
        assert described.status_code == 200 and "/manual/dispatch" in described.json()["paths"]
        page = await http.get("/docs", headers=OPERATOR)
        assert page.status_code == 200 and "/openapi.json" in page.text
        assert (await http.get("/redoc", headers=OPERATOR)).status_code == 200


async def test_workers_never_describe_their_api(tmp_path: Path) -> None:
    for build in (pooled_worker, standalone_worker):
        async with client(build(settings_for(tmp_path, api_docs=True))) as http:
            for path in DOC_PATHS:
                assert (await http.get(path, headers=OPERATOR)).status_code == 404, path
