"""Deepgram live STT emulator: ``/v1/listen`` over WebSocket, transcripts from the audio itself.

The emulator does not recognise speech: it finds the caller's utterances in the audio it
receives (20 ms frames above an energy threshold) and answers the n-th utterance of a
connection with the n-th line of its scenario. Results follow the live API's timing rules:
interim results while speech goes on, a final with ``speech_final`` after ``endpointing`` ms of
silence, a ``from_finalize`` final after ``Finalize``, ``UtteranceEnd`` after
``utterance_end_ms``, ``Metadata`` on ``CloseStream``, and a ``NET-0001`` close after 10 s
with neither audio nor ``KeepAlive``. Audio is ``linear16`` or ``mulaw`` (a phone line's 8 kHz
µ-law, as Twilio sends it) at the ``sample_rate`` the query names, which raw audio requires; each
stream's format and traffic (messages, bytes) is kept in ``/stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from loguru import logger

from switchboard.audio import ulaw_decode
from switchboard.emulators.profiles import DeepgramProfile
from switchboard.emulators.stats import EmulatorStats

DEFAULT_SCENARIO = [
    "Hi, I would like to book an appointment.",
    "What are your opening hours?",
    "Thank you, goodbye.",
]

_IDLE_CLOSE_SECS = 10.0
_FRAME_MS = 20
_MODEL_INFO = {"name": "general-nova-2", "version": "2024-01-09.29447", "arch": "nova-2"}


@dataclass
class _Params:
    encoding: str
    sample_rate: int
    channels: int
    interim_results: bool
    endpointing_ms: float | None
    utterance_end_ms: float | None
    vad_events: bool
    model: str

    @classmethod
    def from_query(cls, q: dict[str, str]) -> _Params:
        def flag(name: str, default: bool = False) -> bool:
            return q.get(name, str(default)).lower() == "true"

        endpointing = q.get("endpointing", "10")
        return cls(
            encoding=q.get("encoding", "linear16"),
            sample_rate=int(q.get("sample_rate", "16000")),
            channels=int(q.get("channels", "1")),
            interim_results=flag("interim_results"),
            endpointing_ms=None if endpointing.lower() == "false" else float(endpointing),
            utterance_end_ms=float(q["utterance_end_ms"]) if q.get("utterance_end_ms") else None,
            vad_events=flag("vad_events"),
            model=q.get("model", "base"),
        )


@dataclass
class _Utterance:
    """One caller utterance: scenario text revealed word by word, finalized once."""

    words: list[str]
    start_s: float
    last_voiced_s: float
    finalized: bool = False
    interims_sent: int = 0
    segments: list[tuple[float, float]] = field(default_factory=list)


class _Session:
    """One WebSocket connection: the audio clock, the current utterance and the scenario position."""

    def __init__(
        self,
        ws: WebSocket,
        params: _Params,
        profile: DeepgramProfile,
        scenario: list[str],
        stats: EmulatorStats,
    ):
        self.ws = ws
        self.stats = stats
        self.p = params
        self.profile = profile
        self.scenario = scenario
        self.request_id = str(uuid.uuid4())
        self.audio_s = 0.0
        self.voiced_run_ms = 0.0
        self.index = 0
        self.utterance: _Utterance | None = None
        self.in_speech = False
        self.send_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()
        self.sha = hashlib.sha256()
        self.frame_bytes = (
            self.p.sample_rate * _FRAME_MS // 1000 * (1 if self.p.encoding == "mulaw" else 2)
        )
        self.pending = b""
        self.traffic = {"encoding": params.encoding, "sample_rate": params.sample_rate, "messages": 0, "bytes": 0}
        stats.streams.append(self.traffic)

    # --- audio ---------------------------------------------------------------------------

    def _decode(self, data: bytes) -> np.ndarray:
        if self.p.encoding == "mulaw":
            return ulaw_decode(data)
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")

    async def on_audio(self, data: bytes) -> None:
        self.traffic["messages"] += 1
        self.traffic["bytes"] += len(data)
        self.sha.update(data)
        self.pending += data
        while len(self.pending) >= self.frame_bytes:
            frame, self.pending = self.pending[: self.frame_bytes], self.pending[self.frame_bytes :]
            await self._on_frame(self._decode(frame))

    async def _on_frame(self, samples: np.ndarray) -> None:
        self.audio_s += _FRAME_MS / 1000
        rms = float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) / 32768.0
        voiced = 20 * np.log10(max(rms, 1e-6)) > self.profile.speech_threshold_dbfs
        self.voiced_run_ms = self.voiced_run_ms + _FRAME_MS if voiced else 0.0
        if voiced and self.utterance is not None and self.utterance.finalized:
            # Deepgram transcribes what is said after a Finalize as new words (the caller went
            # on after a pause the agent took for the end of the turn): the next line.
            self._end_utterance()
            self.in_speech = False
        u = self.utterance
        if voiced and not self.in_speech and self.voiced_run_ms >= self.profile.speech_start_ms:
            self.in_speech = True
            start = self.audio_s - self.voiced_run_ms / 1000
            if u is None:
                u = self.utterance = self._new_utterance(start)
            u.segments.append((start, start))
            if self.p.vad_events:
                await self.send(
                    {"type": "SpeechStarted", "channel": [0], "timestamp": round(start, 3)}
                )
        if u is None:
            return
        if voiced and self.in_speech:
            u.last_voiced_s = self.audio_s
            u.segments[-1] = (u.segments[-1][0], self.audio_s)
            interval_s = self.profile.interim_interval_ms / 1000
            due = int((self.audio_s - u.start_s) / interval_s)
            if self.p.interim_results and not u.finalized and due > u.interims_sent:
                u.interims_sent = due
                await self.send(self._results(u, final=False))
        silence_ms = (self.audio_s - u.last_voiced_s) * 1000
        if (
            self.in_speech
            and self.p.endpointing_ms is not None
            and silence_ms >= self.p.endpointing_ms
        ):
            self.in_speech = False
            if not u.finalized:
                u.finalized = True
                self._later(
                    self.profile.endpoint_latency_ms,
                    self._results(u, final=True, speech_final=True),
                )
        # Without utterance_end_ms, an utterance (one scenario line) ends where endpointing does.
        gap_ms = self.p.utterance_end_ms or self.p.endpointing_ms
        if not self.in_speech and gap_ms is not None and silence_ms >= gap_ms:
            self._end_utterance()

    def _new_utterance(self, start: float) -> _Utterance:
        text = self.scenario[self.index % len(self.scenario)]
        self.index += 1
        self.stats.items.append(text)
        return _Utterance(words=text.split(), start_s=start, last_voiced_s=start)

    def _end_utterance(self) -> None:
        u, self.utterance = self.utterance, None
        if u is None:
            return
        if not u.finalized:
            u.finalized = True
            self._later(
                self.profile.endpoint_latency_ms, self._results(u, final=True, speech_final=True)
            )
        if self.p.utterance_end_ms is not None:
            self._later(
                self.profile.endpoint_latency_ms,
                {
                    "type": "UtteranceEnd",
                    "channel": [0, 1],
                    "last_word_end": round(u.last_voiced_s, 3),
                },
            )

    # --- control messages ----------------------------------------------------------------

    async def on_control(self, text: str) -> bool:
        """Handle a JSON control message; False once the stream is closed."""
        try:
            kind = json.loads(text).get("type")
        except (json.JSONDecodeError, AttributeError):
            await self.ws.close(code=1008, reason="DATA-0000: invalid control message")
            return False
        if kind == "KeepAlive":
            return True
        if kind == "Finalize":
            self._later(self.profile.finalize_latency_ms, self._finalize())
            return True
        if kind == "CloseStream":
            await self._drain()
            if self.utterance is not None and not self.utterance.finalized:
                await self.send(self._finalize())
            await self.send(self._metadata())
            await self.ws.close(code=1000)
            return False
        logger.debug(f"deepgram emulator: ignoring control message {kind!r}")
        return True

    def _finalize(self) -> dict:
        """The from_finalize result: what is pending of the current utterance, possibly nothing."""
        u = self.utterance
        words = [] if u is None or u.finalized else u.words
        if u is not None:
            u.finalized = True
        start = u.start_s if u is not None else self.audio_s
        message = self._results_for(words, start, self.audio_s, final=True, speech_final=False)
        message["from_finalize"] = True
        return message

    # --- messages ------------------------------------------------------------------------

    def _results(self, u: _Utterance, *, final: bool, speech_final: bool = False) -> dict:
        if final:
            words = u.words
        else:  # reveal the words as the speech goes on, never the whole sentence before a final
            spoken_s = sum(e - s for s, e in u.segments)
            words = u.words[: min(len(u.words) - 1, max(1, int(spoken_s * 2.5)))]
        return self._results_for(
            words, u.start_s, u.last_voiced_s, final=final, speech_final=speech_final
        )

    def _results_for(
        self, words: list[str], start: float, end: float, *, final: bool, speech_final: bool
    ) -> dict:
        span = max(end - start, 0.01)
        step = span / max(len(words), 1)
        word_items = [
            {
                "word": w.strip(".,?!").lower(),
                "start": round(start + i * step, 3),
                "end": round(start + (i + 1) * step, 3),
                "confidence": 0.98,
                "punctuated_word": w,
            }
            for i, w in enumerate(words)
        ]
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(span, 3),
            "start": round(start, 3),
            "is_final": final,
            "speech_final": speech_final,
            "from_finalize": False,
            "channel": {
                "alternatives": [
                    {"transcript": " ".join(words), "confidence": 0.98, "words": word_items}
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.p.model)),
                "model_info": _MODEL_INFO,
            },
        }

    def _metadata(self) -> dict:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self.sha.hexdigest(),
            "created": datetime.now(UTC).isoformat(),
            "duration": round(self.audio_s, 3),
            "channels": self.p.channels,
        }

    def _later(self, delay_ms: float, message: dict) -> None:
        async def send_later() -> None:
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            await self.send(message)

        task = asyncio.create_task(send_later())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def send(self, message: dict) -> None:
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_text(json.dumps(message))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()


def create_app(profile: DeepgramProfile, scenario: list[str] | None = None) -> FastAPI:
    """The emulator's ASGI app; ``scenario`` is what the caller says, one utterance per item."""
    lines = scenario or DEFAULT_SCENARIO
    app = FastAPI(title="Deepgram emulator")
    stats = EmulatorStats()

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "provider": "deepgram"}

    @app.get("/stats")
    async def get_stats() -> dict:
        return stats.as_dict()

    @app.websocket("/v1/listen")
    async def listen(ws: WebSocket) -> None:
        auth = ws.headers.get("authorization", "")
        if not (auth.startswith("Token ") or auth.startswith("Bearer ")) or len(auth.split()) != 2:
            await ws.close(code=1008, reason="unauthorized: missing Authorization: Token <key>")
            return
        try:
            params = _Params.from_query(dict(ws.query_params))
        except ValueError as e:
            await ws.close(code=1008, reason=f"bad request: {e}")
            return
        if "encoding" in ws.query_params and "sample_rate" not in ws.query_params:
            # Raw audio says nothing of its rate: Deepgram requires sample_rate with encoding.
            await ws.close(code=1008, reason="bad request: sample_rate is required with encoding")
            return
        if params.encoding not in ("linear16", "mulaw"):
            await ws.close(
                code=1008, reason=f"emulator supports linear16 and mulaw, not {params.encoding}"
            )
            return
        await ws.accept(headers=[(b"dg-request-id", str(uuid.uuid4()).encode())])
        session = _Session(ws, params, profile, lines, stats)
        stats.connections += 1
        last_input = time.monotonic()
        try:
            while True:
                timeout = _IDLE_CLOSE_SECS - (time.monotonic() - last_input)
                try:
                    message = await asyncio.wait_for(ws.receive(), timeout=max(timeout, 0.01))
                except TimeoutError:
                    await ws.close(code=1011, reason="NET-0001: no audio or KeepAlive within 10 s")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                last_input = time.monotonic()
                if message.get("bytes") is not None:
                    await session.on_audio(message["bytes"])
                elif message.get("text") is not None and not await session.on_control(
                    message["text"]
                ):
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            await session.close()

    return app
