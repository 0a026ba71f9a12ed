"""What a worker does with each kind of job."""

from __future__ import annotations

import asyncio
import datetime
import re

from livekit import api as livekit_api
from loguru import logger

from switchboard.agent.config import AgentConfig
from switchboard.dispatch.models import Job, JobKind
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.settings import Settings

ROOM_PATTERN = re.compile(r"^call-[A-Za-z0-9_\-]{1,120}$")
AGENT_TOKEN_TTL = datetime.timedelta(hours=2)


def is_call_room(name: str) -> bool:
    """Rooms the dispatcher answers: ``call-{id}``, as the SIP dispatch rule creates them."""
    return bool(ROOM_PATTERN.match(name))


def agent_room_token(settings: Settings, room: str, identity: str) -> str:
    """A LiveKit access token letting the agent join exactly one call room."""
    if not (settings.livekit_api_key and settings.livekit_api_secret):
        raise ConfigError("LIVEKIT_API_KEY and LIVEKIT_API_SECRET are needed to join LiveKit rooms")
    if not is_call_room(room):
        raise SwitchboardError(f"refusing to join {room!r}: not a call-* room")
    return (
        livekit_api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
        .with_identity(identity)
        .with_name("Switchboard agent")
        .with_kind("agent")
        .with_ttl(AGENT_TOKEN_TTL)
        .with_grants(
            livekit_api.VideoGrants(
                room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
            )
        )
        .to_jwt()
    )


async def run_livekit_job(job: Job, agent: AgentConfig, settings: Settings) -> None:
    """Join the job's room through Pipecat's LiveKit transport and run the agent there."""
    from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport
    from pipecat.workers.runner import WorkerRunner

    from switchboard.agent.pipeline import build_call_pipeline

    if not settings.livekit_url:
        raise ConfigError("LIVEKIT_URL is needed to join LiveKit rooms")
    assert job.room is not None
    token = agent_room_token(settings, job.room, identity=f"agent-{job.call_id}")
    transport = LiveKitTransport(
        url=settings.livekit_url,
        token=token,
        room_name=job.room,
        params=LiveKitParams(audio_in_enabled=True, audio_out_enabled=True),
    )
    call = build_call_pipeline(transport, agent, settings, out_sample_rate=16000)
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(call.worker)
    await runner.run()


async def run_test_job(job: Job) -> None:
    """Hold a slot like a call would: for drills (crash, drain) and dispatch benchmarks."""
    logger.info(f"test job {job.job_id}: holding a slot for {job.duration_secs} s")
    await asyncio.sleep(job.duration_secs)


async def run_job(job: Job, agent: AgentConfig, settings: Settings) -> None:
    if job.kind is JobKind.LIVEKIT_ROOM:
        await run_livekit_job(job, agent, settings)
    elif job.kind is JobKind.TEST:
        await run_test_job(job)
