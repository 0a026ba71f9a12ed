"""The agent's HTTP/WebSocket server: Twilio webhook, media stream, health, metrics, call records."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import asdict
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from switchboard.agent.config import AgentConfig, load_agent_config
from switchboard.engines import build_stt, build_tts
from switchboard.errors import TelephonyError
from switchboard.observability import metrics
from switchboard.settings import Settings, get_settings
from switchboard.telephony.twilio import connect_stream_twiml, read_stream_start, signature_is_valid
from switchboard.worker.calls import CallRegistry, run_twilio_call

MEDIA_PATH = "/twilio/media"


def _warm_engines(settings: Settings, agent: AgentConfig) -> None:
    """Load every model now and synthesize the fixed replies, so no call pays for it."""
    from switchboard.engines.piper_tts import shared_piper
    from switchboard.engines.turn_detection import warm_up

    build_stt(settings)
    build_tts(settings)
    warm_up()
    if settings.tts_engine == "piper":
        shared_piper(settings.inference_threads).prewarm(agent.fixed_utterances())


def _public_base(request: Request | WebSocket, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    scheme = request.url.scheme.replace("ws", "http")
    return f"{scheme}://{request.headers.get('host', request.url.netloc)}"


def _stream_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path}{MEDIA_PATH}"


def create_app(settings: Settings | None = None, agent: AgentConfig | None = None) -> FastAPI:
    """Build the agent server; models load during start-up, before it reports ready."""
    settings = settings or get_settings()
    agent = agent or load_agent_config(settings.agent_config)
    registry = CallRegistry()
    state = {"ready": False}
    call_tasks: set[asyncio.Task] = set()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await asyncio.to_thread(_warm_engines, settings, agent)
        state["ready"] = True
        logger.info(f"agent '{agent.name}' ready on {settings.host}:{settings.port}")
        yield
        state["ready"] = False
        if call_tasks:
            logger.info(f"shutting down: waiting for {len(call_tasks)} live call(s)")
            await asyncio.wait(call_tasks, timeout=30)

    app = FastAPI(title="Switchboard agent", lifespan=lifespan)

    @app.get("/health")
    async def health() -> Response:
        body = {"status": "ok" if state["ready"] else "starting", "active_calls": registry.active}
        return _json(body, 200 if state["ready"] else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/twilio/voice")
    async def twilio_voice(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        base = _public_base(request, settings)
        if settings.twilio_auth_token:
            url = f"{base}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
            token = settings.twilio_auth_token.get_secret_value()
            if not signature_is_valid(token, url, form, request.headers.get("X-Twilio-Signature")):
                metrics.WEBHOOKS.labels(provider="twilio", result="bad_signature").inc()
                raise HTTPException(status_code=403, detail="invalid X-Twilio-Signature")
        metrics.WEBHOOKS.labels(provider="twilio", result="accepted").inc()
        params = {k: form[k] for k in ("CallSid", "From", "To") if k in form}
        twiml = connect_stream_twiml(_stream_url(base), params)
        return Response(twiml, media_type="application/xml")

    @app.websocket(MEDIA_PATH)
    async def twilio_media(websocket: WebSocket) -> None:
        if settings.twilio_auth_token:
            url = _stream_url(_public_base(websocket, settings))
            token = settings.twilio_auth_token.get_secret_value()
            if not signature_is_valid(token, url, {}, websocket.headers.get("X-Twilio-Signature")):
                metrics.CONNECTION_ERRORS.labels(transport="twilio").inc()
                await websocket.close(code=1008, reason="invalid X-Twilio-Signature")
                return
        await websocket.accept()
        try:
            start = await read_stream_start(websocket)
        except (TelephonyError, WebSocketDisconnect) as e:
            metrics.CONNECTION_ERRORS.labels(transport="twilio").inc()
            logger.warning(f"twilio media stream refused: {e}")
            await websocket.close(code=1008)
            return
        task = asyncio.current_task()
        assert task is not None
        call_tasks.add(task)
        try:
            await run_twilio_call(websocket, start, agent, settings, registry)
        finally:
            call_tasks.discard(task)

    @app.get("/calls")
    async def calls() -> list[dict]:
        return [asdict(r) for r in registry.recent()]

    @app.get("/calls/{call_sid}")
    async def call(call_sid: str) -> dict:
        record = registry.get(call_sid)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no call {call_sid}")
        return asdict(record)

    return app


def _json(body: dict, status: int) -> Response:
    import json

    return Response(json.dumps(body), status_code=status, media_type="application/json")
