"""The call history API: list, read, listen to and delete calls; inspect and replay webhooks.

Every route needs the operator API key (``X-API-Key``). ``GET /calls/{id}`` returns the call's
live dispatch state from Redis (``status``, ``worker``... while it is kept there) merged with
its stored record once the call has ended (transcript, turns, recording...).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from dataclasses import dataclass
from typing import Annotated

import soundfile as sf
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from switchboard.agent.config import AgentConfig, load_agent_config
from switchboard.analysis.recording import RecordingAnalysis, analyze_channels
from switchboard.dispatch.calls import CallLedger
from switchboard.errors import ConfigError
from switchboard.http.auth import KeyFirstRoute, require_caller_data_key
from switchboard.observability import metrics
from switchboard.records.archive import store_from_settings
from switchboard.records.models import CallPage, CallQuery, DeadLetter
from switchboard.records.store import CallStore
from switchboard.records.webhooks import WebhookSender
from switchboard.settings import Settings


def analyze_flac(audio: bytes) -> RecordingAnalysis:
    """``switchboard analyze`` of a stored recording (caller left, agent right)."""
    data, rate = sf.read(io.BytesIO(audio), dtype="int16", always_2d=True)
    if data.shape[1] < 2:
        raise ValueError("the recording has one channel; two are needed")
    return analyze_channels(data[:, 0], data[:, 1], int(rate))


@dataclass
class CallsBackend:
    """What the API reads: the call history, and the agent's webhook to replay dead letters."""

    store: CallStore
    webhooks: WebhookSender
    agent: AgentConfig | None

    @classmethod
    def from_settings(cls, settings: Settings) -> CallsBackend:
        store = store_from_settings(settings)
        try:
            agent: AgentConfig | None = load_agent_config(settings.agent_config)
        except ConfigError as e:
            logger.warning(f"dead-letter replay unavailable: {e}")
            agent = None
        webhooks = WebhookSender(
            store,
            max_attempts=1,
            backoff_secs=settings.webhook_backoff_secs,
            timeout_secs=settings.webhook_timeout_secs,
        )
        return cls(store, webhooks, agent)

    async def open(self) -> None:
        try:
            await self.store.open()
        except SQLAlchemyError as e:  # the API answers 503 until the database is back
            logger.error(f"call history database unavailable at start-up: {e}")

    async def close(self) -> None:
        await self.webhooks.close()
        await self.store.close()


def create_calls_router(settings: Settings, backend: CallsBackend, ledger: CallLedger) -> APIRouter:
    """Routes of ``/calls`` and ``/webhooks/dead-letters``, all behind the API key."""
    router = APIRouter(
        dependencies=[Depends(require_caller_data_key)], tags=["calls"], route_class=KeyFirstRoute
    )
    store, webhooks, agent = backend.store, backend.webhooks, backend.agent

    @router.get("/calls")
    async def list_calls(
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        number: str | None = None,
        agent_name: Annotated[str | None, Query(alias="agent")] = None,
        outcome: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> CallPage:
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise HTTPException(
                    status_code=422, detail=f"{name}: give a timezone (e.g. 2026-12-01T08:00:00Z)"
                )
        query = CallQuery(
            since=since,
            until=until,
            number=number,
            agent=agent_name,
            outcome=outcome,
            limit=limit,
            offset=offset,
        )
        return await store.list(query)

    @router.get("/calls/{call_id}")
    async def get_call(call_id: str) -> dict:
        state, record = await asyncio.gather(ledger.get(call_id), store.get(call_id))
        if not state and record is None:
            raise HTTPException(status_code=404, detail=f"no call {call_id}")
        return {**state, **(record.model_dump(mode="json") if record else {})}

    @router.get("/calls/{call_id}/recording")
    async def get_recording(call_id: str) -> Response:
        found = await store.recording(call_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no recording of call {call_id}")
        call, audio = found
        return Response(
            audio,
            media_type="audio/flac",
            headers={
                "Content-Disposition": f'inline; filename="{call.call_id}.flac"',
                "Cache-Control": "no-store",
            },
        )

    @router.get("/calls/{call_id}/analysis")
    async def get_analysis(call_id: str) -> RecordingAnalysis:
        found = await store.recording(call_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no recording of call {call_id}")
        try:
            return await asyncio.to_thread(analyze_flac, found[1])
        except (ValueError, RuntimeError) as e:
            raise HTTPException(
                status_code=422, detail=f"recording of {call_id} cannot be analysed: {e}"
            ) from e

    @router.delete("/calls/{call_id}", status_code=204)
    async def delete_call(call_id: str) -> Response:
        if not await store.delete(call_id):
            raise HTTPException(status_code=404, detail=f"no call {call_id}")
        metrics.CALL_RECORDS_PURGED.labels(reason="request").inc()
        return Response(status_code=204)

    @router.get("/webhooks/dead-letters")
    async def dead_letters(
        limit: Annotated[int, Query(ge=1, le=500)] = 100, offset: Annotated[int, Query(ge=0)] = 0
    ) -> list[DeadLetter]:
        return await store.dead_letters(limit, offset)

    @router.post("/webhooks/dead-letters/{letter_id}/replay")
    async def replay(letter_id: int) -> dict:
        if agent is None or agent.webhook is None:
            raise HTTPException(
                status_code=409, detail="the agent config has no webhook to sign with"
            )
        delivered = await webhooks.replay(letter_id, agent.webhook.secret.get_secret_value())
        if delivered is None:
            raise HTTPException(status_code=404, detail=f"no dead letter {letter_id}")
        if not delivered:
            raise HTTPException(
                status_code=502, detail=f"dead letter {letter_id}: the receiver refused it again"
            )
        return {"delivered": True, "id": letter_id}

    return router
