"""Versioned, validated records stored in Redis: jobs, workers and call state."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from switchboard.call_ids import new_call_id


class JobKind(StrEnum):
    """What a worker is asked to do."""

    LIVEKIT_ROOM = "livekit_room"  # join a LiveKit room and talk to the SIP caller in it
    TEST = "test"  # hold a slot for a while and record it: drills and benchmarks without media


class SipAttributes(BaseModel):
    """What LiveKit's SIP participant attributes say about a room's call (``sip.*``)."""

    model_config = ConfigDict(extra="forbid")

    trunk_id: str | None = Field(None, description="sip.trunkID: the LiveKit trunk (ST_...)")
    trunk_phone_number: str | None = Field(None, description="sip.trunkPhoneNumber: our number")
    phone_number: str | None = Field(
        None, description="sip.phoneNumber: the far end (caller inbound, callee outbound)"
    )


class Job(BaseModel):
    """A call job on the ``sb:jobs`` stream.

    Fields added since version 1 are optional and left out of the stored JSON when unset, so
    jobs without them still read on workers that predate them; upgrade workers first.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    call_id: str = Field(default_factory=new_call_id)
    kind: JobKind
    room: str | None = None
    caller: str | None = None
    agent: str | None = Field(None, description="The agent by name (outbound calls name theirs)")
    sip: SipAttributes | None = Field(None, description="LIVEKIT_ROOM jobs: the SIP participant's attributes")
    duration_secs: float = Field(1.0, ge=0, le=3600, description="TEST jobs only: how long to hold.")
    created_at: float = Field(default_factory=time.time)

    def to_fields(self) -> dict[str, str]:
        return {"job": self.model_dump_json(exclude_none=True)}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Job:
        return cls.model_validate_json(fields["job"])


class WorkerInfo(BaseModel):
    """A worker's registration, refreshed by its heartbeat."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    worker_id: str
    media_url: str = Field(description="Internal base URL of its media endpoint, reached by the media edge.")
    capacity: int = Field(ge=0)
    webrtc_capacity: int = Field(
        0, ge=0, description="Browser calls it takes at once; a worker registered without it takes none."
    )
    pid: int
    started_at: float
    heartbeat_at: float
    draining: bool = False


class CallStatus(StrEnum):
    RESERVED = "reserved"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    ABANDONED = "abandoned"  # a browser call whose peer never connected: no call took place
