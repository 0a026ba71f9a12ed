"""One settings object for every process role, read once from the environment.

Switchboard's own settings use the ``SWITCHBOARD_`` prefix; provider credentials keep the
names their SDKs document (``TWILIO_AUTH_TOKEN``, ``LIVEKIT_API_KEY``, ``DEEPGRAM_API_KEY``...).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_AGENT_CONFIG = Path(__file__).parent / "agents" / "receptionist.yaml"
# Printed here for all to read: a stack using it is refused off loopback (stream_tokens.check_secret).
DEV_STREAM_SECRET = "switchboard-dev-stream-secret"


class Settings(BaseSettings):
    """Operational parameters with production defaults."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str | None = Field(
        None, description="Base URL Twilio reaches us at (https://...); derived from the request when unset."
    )
    agent_config: Path = DEFAULT_AGENT_CONFIG
    agents_dir: Path | None = Field(
        None,
        description="Directory of agent YAMLs, each answering its `numbers`, `livekit_trunks` and "
        "`livekit_rooms`; others get agent_config.",
    )
    agents_reload_secs: float = Field(2.0, gt=0, description="How often agents_dir is checked for edits.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    stt_engine: str = "whisper"
    tts_engine: str = "piper"
    inference_threads: int = Field(2, ge=1, le=64, description="Threads for each model's inference.")
    tts_cache_dir: Path | None = Field(
        None,
        description="Where the local TTS keeps the audio of agents' fixed lines across restarts "
        "(unset: synthesized again at every start).",
    )
    whisper_full_window: bool = Field(
        False, description="Encode the full 30 s Whisper window (slower, slightly more accurate)."
    )

    responder: Literal["scripted", "openai", "anthropic"] = Field(
        "scripted", description="Who decides what to say: the agent's intents, or an LLM."
    )

    # Cloud providers (engines `deepgram`, `elevenlabs`; responders `openai`, `anthropic`).
    # The URLs are settings so the emulators (`switchboard emulate ...`) can stand in.
    deepgram_url: str = Field("wss://api.deepgram.com", description="Deepgram API root (ws:// for an emulator).")
    deepgram_model: str = "nova-2"
    deepgram_endpointing_ms: int = Field(300, ge=10, description="Silence that makes a result speech_final.")
    deepgram_utterance_end_ms: int = Field(1000, ge=1000, description="Gap after which UtteranceEnd is sent.")
    deepgram_chunk_ms: int = Field(
        80, ge=20, le=100,
        description="Caller audio goes up to Deepgram in messages this long (it takes 20-100 ms); "
        "what is held is sent before each Finalize, so the final transcript is not delayed.",
    )
    deepgram_line_mulaw: bool = Field(
        True,
        description="On an 8 kHz phone line (Twilio) stream Deepgram the line's own µ-law "
        "(encoding=mulaw, sample_rate=8000) rather than the pipeline's 16 kHz PCM.",
    )
    elevenlabs_url: str = Field("wss://api.elevenlabs.io", description="ElevenLabs API root (ws:// for an emulator).")
    elevenlabs_voice_id: str = Field("21m00Tcm4TlvDq8ikWAM", description="Voice id (default: the premade 'Rachel').")
    elevenlabs_model: str = "eleven_flash_v2_5"
    llm_base_url: str | None = Field(
        None, description="API root as the provider SDK expects it (OpenAI: ending in /v1); unset: the provider's."
    )
    llm_model: str | None = Field(None, description="Model name; unset: gpt-4o-mini / claude-haiku-4-5.")
    llm_max_tokens: int = Field(200, ge=1, description="Cap on one reply; phone replies are short.")

    # Provider resilience: how long a call waits on a provider before falling back to the local engine.
    provider_connect_timeout_secs: float = Field(2.0, gt=0, description="Connect (TCP+TLS+WS/HTTP) timeout.")
    provider_response_timeout_secs: float = Field(
        3.0, gt=0, description="First transcript/audio/token after the request; longer counts as a failure."
    )
    provider_retries: int = Field(1, ge=0, le=5, description="SDK-level retries (with backoff) of a failed request.")
    breaker_failure_threshold: int = Field(3, ge=1, description="Consecutive failures that open a provider's breaker.")
    breaker_reset_secs: float = Field(30.0, gt=0, description="How long an open breaker sends calls to local engines.")

    input_frame_ms: int = Field(
        20, ge=20, le=100, multiple_of=20,
        description="Telephony audio is handed to the pipeline in chunks this long (20 ms frames "
        "joined): fewer frames per call, but end of speech is seen up to that much later.",
    )
    output_frame_ms: int = Field(
        40, ge=20, le=100, multiple_of=20,
        description="The agent's audio goes out to the phone line in messages this long: fewer "
        "messages per call; barge-in still clears what the line has not played.",
    )
    media_stage: Literal["graph", "lean"] = Field(
        "lean",
        description="Where a Twilio stream's caller audio is handled: ``graph`` pushes every chunk "
        "through the Pipecat pipeline's processors; ``lean`` hands it to the call's media stage "
        "(VAD, STT, smart-turn, recording) where it arrives, and only speech and transcript "
        "events enter the pipeline (switchboard.call.conversation.media_stage).",
    )
    vad_stop_secs: float = Field(0.2, ge=0.05, le=2.0, description="Silence before VAD reports a stop.")
    vad_start_secs: float = Field(
        0.1,
        ge=0.02,
        le=1.0,
        description="Speech before VAD reports a start, and so a barge-in: 0.1 s stops the agent "
        "~110 ms (p50) after the caller starts; noise alone (hiss, hum, breath, cough) did not "
        "trigger it in the benchmark. Raise it if backchannels interrupt too often.",
    )
    speculative_stt_after_secs: float | None = Field(
        0.032,
        ge=0.0,
        le=1.0,
        description="Start transcribing this long into the caller's silence, before VAD reports "
        "the stop (the result is dropped if they go on); unset to transcribe only at the stop.",
    )
    turn_stop_secs: float = Field(
        1.2, ge=0.2, le=5.0, description="Silence that ends a turn the turn model judged incomplete."
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    api_key: SecretStr | None = Field(None, description="An operator key (kept for compatibility: see api_keys).")
    api_keys: SecretStr | None = Field(
        None, description="Operator keys, comma-separated (two while rotating); hashed when loaded."
    )
    api_key_hashes: str = Field(
        "", description="SHA-256 digests (hex, comma-separated) of operator keys, so no plain key is stored."
    )
    api_docs: bool = Field(
        False,
        description="Serve /docs, /redoc and /openapi.json on the orchestrator, behind the operator key "
        "(workers never do).",
    )
    stream_secret: SecretStr = Field(
        SecretStr(DEV_STREAM_SECRET),
        description="HMAC key of media stream tokens, shared by orchestrators and workers. `switchboard up` "
        "makes one per deployment (var/stream-secret, owner-only) when unset; the development default is "
        "refused on a non-loopback bind.",
    )
    stream_token_ttl_secs: float = Field(30.0, gt=0, description="How long a stream URL stays valid.")

    # Limits on each media WebSocket (a Twilio media message is ~300 bytes of JSON, 50 a second).
    media_max_message_bytes: int = Field(
        16384, ge=1024, description="Largest media message; larger closes it with 1009 (also uvicorn's ws_max_size)."
    )
    media_max_messages_per_sec: float = Field(
        200.0, gt=0, description="Sustained messages per second per media socket; faster closes it with 1008."
    )
    media_message_burst: int = Field(
        500, ge=1,
        description="Messages a media socket may send at once above that rate: 10 s of Twilio audio, so a "
        "backlog read after a stalled event loop or a network hiccup is not taken for a flood.",
    )
    media_start_timeout_secs: float = Field(
        10.0, gt=0, description="A media socket that has not sent 'start' this long after connecting is closed."
    )

    # Limits on public HTTP endpoints: per source address, in a moving window shared in Redis
    # (notation of the `limits` package: "600/minute", "10/second;100/hour").
    rate_limit_webhooks: str = Field(
        "600/minute", description="Twilio and LiveKit webhooks per source (Twilio sends from few addresses)."
    )
    rate_limit_webrtc: str = Field("10/minute", description="Browser call offers per source.")
    rate_limit_operator: str = Field("600/minute", description="/stats, /metrics, /dashboard, /calls, /manual per source.")
    rate_limit_media: str = Field(
        "600/minute", description="WebSocket handshakes (media streams) per source, on any path."
    )
    rate_limit_pages: str = Field("300/minute", description="Every other path (the web pages and assets) per source.")
    trusted_proxies: str = Field(
        "",
        description="Comma list of proxy addresses/networks whose X-Forwarded-For names the client "
        "(\"*\": any peer); empty: the peer address is the client and X-Forwarded-For is ignored.",
    )
    max_request_body_bytes: int = Field(65536, ge=1024, description="Largest HTTP request body; larger gets 413.")

    # Worker pool (named like LiveKit's worker options, with production defaults).
    max_calls: int = Field(
        32, ge=1, le=1000,
        description="The hard ceiling of calls one worker process runs at once (admission=headroom "
        "admits fewer while its measurements say so; admission=slots admits exactly this many).",
    )
    # Admission by measured headroom (switchboard.worker.headroom): a worker takes another call
    # only while what it measures says that call will still meet the latency objective.
    admission: Literal["headroom", "slots"] = Field(
        "headroom",
        description="headroom: admit by measured latency, event-loop lag, CPU and engine queue, up to "
        "max_calls; slots: admit up to max_calls whatever the load (capacity sweeps).",
    )
    latency_objective_ms: float = Field(
        600.0, gt=0, le=10000, description="The p95 voice-to-voice latency calls must keep (ms)."
    )
    admission_latency_margin: float = Field(
        0.8, gt=0, le=1,
        description="A worker closes when its agent-side turn p95 reaches this fraction of the objective "
        "(the caller also hears the network and the phone's jitter buffer).",
    )
    admission_lag_limit_ms: float = Field(
        50.0, gt=0, description="Event-loop lag (p95 over the last seconds) at which a worker closes."
    )
    admission_cpu_limit: float = Field(
        0.85, gt=0, le=1, description="Machine CPU use (0-1) at which a worker closes."
    )
    admission_engine_queue_limit: int = Field(
        4, ge=1, description="Local STT/TTS requests waiting or running at which a worker closes."
    )
    admission_burst: int = Field(
        4, ge=1, le=100,
        description="Calls an open worker admits beyond its load until its next report: a burst "
        "between two reports cannot over-fill it.",
    )
    admission_settle_secs: float = Field(
        5.0, ge=0, le=60,
        description="At most admission_burst calls are let in over this long: a new call's cost shows in "
        "the measurements only once its caller speaks.",
    )
    headroom_window_secs: float = Field(
        10.0, gt=0, le=300, description="The window turn latency p95 is measured over."
    )
    hold_poll_secs: float = Field(
        0.2, gt=0, le=5, description="How often an orchestrator offers freed headroom to held calls."
    )
    heartbeat_interval_secs: float = Field(0.5, gt=0, description="Worker heartbeat period.")
    worker_ttl_secs: float = Field(2.0, gt=0, description="A worker silent this long is dead.")
    reclaim_idle_secs: float = Field(
        2.0, gt=0, description="A claimed job unacknowledged and unrefreshed this long is redelivered."
    )
    webrtc_max_calls: int = Field(
        2, ge=0, le=1000, description="Browser calls one worker answers at once (connecting or live), within max_calls."
    )
    webrtc_connect_timeout_secs: float = Field(
        10.0, gt=0,
        description="An answered browser call whose peer connection is not up by then is dropped and its "
        "place under the browser cap given back (a browser on loopback or a LAN connects in about 1 s).",
    )
    drain_timeout_secs: float = Field(30.0, ge=0, description="SIGTERM: how long live calls may finish.")
    reservation_ttl_secs: float = Field(
        15.0, gt=0, description="How long a slot reserved for a Twilio stream waits for it to connect."
    )
    call_state_ttl_secs: int = Field(86400, gt=0, description="How long call state stays in Redis.")
    call_session_ttl_secs: int = Field(
        7200, gt=0,
        description="How long a call's conversation state stays in Redis after its last turn (only a live call needs it).",
    )
    max_call_resumes: int = Field(
        3, ge=0, le=20,
        description="How many times a call whose worker was lost is placed on another one before it is given up.",
    )
    worker_internal_url: str | None = Field(
        None,
        description="Base URL the media edge (the orchestrators) reaches this worker at, on the internal "
        "network; defaults to http://host:port (the host's own address when host is 0.0.0.0).",
    )

    # Media edge: Twilio streams enter at the orchestrators and are relayed to the worker
    # holding the call, so workers need no public address (there is no direct-to-worker mode).
    media_edge_connect_timeout_secs: float = Field(
        2.0, gt=0, description="How long the edge waits to open the stream's hop to its worker."
    )

    twilio_api_url: str = Field(
        "https://api.twilio.com", description="Twilio REST API root (an emulator's URL in tests)."
    )
    outbound_from: str | None = Field(
        None, pattern=r"^\+[1-9][0-9]{7,14}$", description="Caller ID of outbound calls (a Twilio number)."
    )
    tool_signing_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key signing agent tool webhooks (X-Switchboard-Signature)."
    )
    transfer_ring_secs: int = Field(30, ge=5, le=600, description="How long a transfer target rings.")
    outbound_ingress: Literal["twilio", "livekit"] = Field(
        "twilio", description="How POST /calls places a call when the request names no `ingress`."
    )
    outbound_ring_secs: int = Field(
        30, ge=5, le=600, description="How long a LiveKit outbound callee rings before the call counts as no answer."
    )
    livekit_outbound_trunk: str | None = Field(
        None, pattern=r"^ST_[A-Za-z0-9]+$",
        description="LiveKit outbound SIP trunk (ST_...) for outbound calls and warm transfers.",
    )
    livekit: bool = Field(
        False,
        description="`switchboard up` also runs a LiveKit server and LiveKit SIP on loopback "
        "(built by scripts/install_livekit.sh), with keys of its own unless LIVEKIT_API_KEY/SECRET are set.",
    )
    livekit_port: int = Field(7880, ge=1, le=65535, description="The local LiveKit server's port (API and signalling).")
    livekit_sip_port: int = Field(5060, ge=1, le=65535, description="The local LiveKit SIP's SIP port (UDP and TCP).")
    livekit_numbers: str = Field(
        "",
        description="Numbers (E.164, comma-separated) the inbound trunk answers; unset: the agents' "
        "`numbers`, else +15550100 on a local stack.",
    )
    # Call records (switchboard.records): history database, recordings, post-call webhooks.
    database_url: str = Field(
        "sqlite:///var/switchboard.db",
        description="SQLAlchemy URL of the call history (postgresql+psycopg://user:pw@host/db in production).",
    )
    recordings_url: str = Field(
        "var/recordings", description="Where recordings go: a directory, or s3://bucket/prefix."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, R2...); unset: AWS. Credentials: AWS_* variables."
    )
    records_retention_days: int | None = Field(
        None, ge=1, description="Delete calls (rows and audio) older than this; unset keeps them."
    )
    records_purge_interval_secs: float = Field(3600.0, gt=0, description="How often retention runs.")
    webhook_max_attempts: int = Field(5, ge=1, le=20, description="Post-call webhook tries before dead-lettering.")
    webhook_backoff_secs: float = Field(1.0, gt=0, description="First retry delay; doubles on each retry.")
    webhook_timeout_secs: float = Field(5.0, gt=0, description="Timeout of one webhook POST.")
    call_analysis_timeout_secs: float = Field(
        30.0, gt=0, description="How long the post-call LLM summary may take before the record is saved without it."
    )

    twilio_account_sid: str | None = Field(None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN"))
    livekit_url: str | None = Field(None, validation_alias=AliasChoices("LIVEKIT_URL"))
    livekit_api_key: str | None = Field(None, validation_alias=AliasChoices("LIVEKIT_API_KEY"))
    livekit_api_secret: SecretStr | None = Field(None, validation_alias=AliasChoices("LIVEKIT_API_SECRET"))
    deepgram_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("DEEPGRAM_API_KEY"))
    elevenlabs_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("ELEVENLABS_API_KEY"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    anthropic_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("ANTHROPIC_API_KEY"))


    def api_key_list(self) -> list[str]:
        """Every plain operator key configured (SWITCHBOARD_API_KEY and SWITCHBOARD_API_KEYS)."""
        keys = [self.api_key.get_secret_value()] if self.api_key else []
        if self.api_keys:
            keys += [k.strip() for k in self.api_keys.get_secret_value().split(",")]
        return [k for k in keys if k]

    def api_key_hash_list(self) -> list[str]:
        return [h.strip().lower() for h in self.api_key_hashes.split(",") if h.strip()]

    @field_validator("api_key_hashes")
    @classmethod
    def _key_hashes(cls, value: str) -> str:
        for digest in (h.strip() for h in value.split(",") if h.strip()):
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError(f"not a SHA-256 hex digest (64 hex characters): {digest[:12]}...")
        return value

    @field_validator(
        "rate_limit_webhooks", "rate_limit_webrtc", "rate_limit_operator", "rate_limit_media", "rate_limit_pages"
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as e:
            raise ValueError(f"not a rate limit like '600/minute': {value!r}") from e
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, validated once."""
    return Settings()
