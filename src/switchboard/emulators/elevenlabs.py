"""ElevenLabs TTS emulator: ``stream-input`` and ``multi-stream-input`` over WebSocket.

Audio is a speech-like harmonic signal (a voice-range fundamental with harmonics, syllable-rate
envelope, short word gaps), rendered once per output format at start-up and sliced to the
text's length per request, so serving it costs no synthesis. It goes out in the requested
``output_format`` (``pcm_*`` or ``ulaw_8000``) with per-chunk character alignment, paced by
the latency profile, and each context (or the stream) ends with ``isFinal``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from loguru import logger

from switchboard.audio import ulaw_encode
from switchboard.emulators.profiles import ElevenLabsProfile
from switchboard.emulators.stats import EmulatorStats

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
_LOOP_SECS = 8.0
_SCHEDULE_FIRST_CHARS = 120  # generation_config.chunk_length_schedule's default first step


def parse_output_format(value: str) -> tuple[str, int]:
    """``pcm_16000`` → ("pcm", 16000); ``ulaw_8000`` → ("ulaw", 8000); anything else raises."""
    kind, _, rate = value.partition("_")
    if kind == "pcm" and rate.isdigit() and int(rate) in PCM_RATES:
        return kind, int(rate)
    if value == "ulaw_8000":
        return "ulaw", 8000
    raise ValueError(
        f"emulator supports pcm_{{{','.join(map(str, PCM_RATES))}}} and ulaw_8000, not {value!r}"
    )


@lru_cache(maxsize=16)
def rendered_voice(output_format: str) -> bytes:
    """``_LOOP_SECS`` of speech-like audio in ``output_format``, rendered once."""
    kind, rate = parse_output_format(output_format)
    t = np.arange(int(rate * _LOOP_SECS)) / rate
    f0 = 125 + 20 * np.sin(2 * np.pi * 0.6 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(
        a * np.sin(k * phase)
        for k, a in ((1, 1.0), (2, 0.7), (3, 0.45), (4, 0.3), (5, 0.2), (6, 0.1))
    )
    syllables = np.abs(np.sin(np.pi * 4.0 * t)) ** 0.5
    # Each 0.7 s "word" ends with its gap: a reply's audio is voiced from its first sample, as
    # the profile's first_audio_ms promises (a leading gap added 80 ms of silence to every reply).
    word_gaps = (t % 0.7) < 0.62
    samples = (wave / 2.75 * syllables * word_gaps * 0.35 * 32767).astype(np.int16)
    return ulaw_encode(samples) if kind == "ulaw" else samples.astype("<i2").tobytes()


def _bytes_per_ms(output_format: str) -> float:
    kind, rate = parse_output_format(output_format)
    return rate / 1000 * (1 if kind == "ulaw" else 2)


@dataclass
class _Context:
    id: str | None
    buffer: str = ""
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    worker: asyncio.Task | None = None


_FINAL = object()


class _Session:
    def __init__(
        self,
        ws: WebSocket,
        output_format: str,
        auto_mode: bool,
        profile: ElevenLabsProfile,
        multi: bool,
        stats: EmulatorStats,
    ):
        self.ws = ws
        self.stats = stats
        self.format = output_format
        self.auto_mode = auto_mode
        self.profile = profile
        self.multi = multi
        self.voice = rendered_voice(output_format)
        self.bytes_per_ms = _bytes_per_ms(output_format)
        self.contexts: dict[str | None, _Context] = {}
        self.send_lock = asyncio.Lock()

    def context(self, context_id: str | None) -> _Context:
        ctx = self.contexts.get(context_id)
        if ctx is None:
            ctx = self.contexts[context_id] = _Context(context_id)
            ctx.worker = asyncio.create_task(self._run(ctx))
        return ctx

    def add_text(self, ctx: _Context, text: str, *, flush: bool = False) -> None:
        ctx.buffer += text
        ready = (
            flush
            or (self.auto_mode and ctx.buffer.strip())
            or len(ctx.buffer) >= _SCHEDULE_FIRST_CHARS
        )
        if ready and ctx.buffer.strip():
            ctx.queue.put_nowait(ctx.buffer)
            ctx.buffer = ""

    def finish(self, ctx: _Context) -> None:
        self.add_text(ctx, "", flush=True)
        ctx.queue.put_nowait(_FINAL)

    async def _run(self, ctx: _Context) -> None:
        while True:
            job = await ctx.queue.get()
            if job is _FINAL:
                await self.send({"isFinal": True, **self._ctx_field(ctx)})
                self.contexts.pop(ctx.id, None)
                return
            await self._speak(ctx, job)

    async def _speak(self, ctx: _Context, text: str) -> None:
        self.stats.items.append(text)
        duration_ms = len(text) * self.profile.ms_per_char
        total = int(duration_ms * self.bytes_per_ms) // 2 * 2
        chunk = max(2, int(self.profile.chunk_ms * self.bytes_per_ms) // 2 * 2)
        loop = self.voice * (total // len(self.voice) + 1)
        char_ms = duration_ms / max(len(text), 1)
        await asyncio.sleep(self.profile.first_audio_ms / 1000)
        for offset in range(0, total, chunk):
            piece = loop[offset : min(offset + chunk, total)]
            start_ms = offset / self.bytes_per_ms
            end_ms = start_ms + len(piece) / self.bytes_per_ms
            first = int(start_ms / char_ms)
            last = len(text) if offset + chunk >= total else int(end_ms / char_ms)
            chars = list(text[first:last])
            alignment = {
                "chars": chars,
                "charStartTimesMs": [
                    round((first + i) * char_ms - start_ms) for i in range(len(chars))
                ],
                "charDurationsMs": [round(char_ms)] * len(chars),
            }
            await self.send(
                {
                    "audio": base64.b64encode(piece).decode(),
                    "alignment": alignment,
                    "normalizedAlignment": alignment,
                    **self._ctx_field(ctx),
                }
            )
            await asyncio.sleep(self.profile.chunk_ms / 1000 / self.profile.realtime_factor)

    def _ctx_field(self, ctx: _Context) -> dict:
        return {"contextId": ctx.id} if self.multi else {}

    async def send(self, message: dict) -> None:
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_text(json.dumps(message))

    async def drain(self) -> None:
        workers = [c.worker for c in self.contexts.values() if c.worker]
        await asyncio.gather(*workers, return_exceptions=True)

    def close(self) -> None:
        for ctx in self.contexts.values():
            if ctx.worker:
                ctx.worker.cancel()


def _has_key(ws: WebSocket, first: dict | None) -> bool:
    if ws.headers.get("xi-api-key"):
        return True
    return bool(first and (first.get("xi-api-key") or first.get("authorization")))


def create_app(profile: ElevenLabsProfile) -> FastAPI:
    """The emulator's ASGI app."""
    app = FastAPI(title="ElevenLabs emulator")
    stats = EmulatorStats()

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "provider": "elevenlabs"}

    @app.get("/stats")
    async def get_stats() -> dict:
        return stats.as_dict()

    async def serve(ws: WebSocket, multi: bool) -> None:
        output_format = ws.query_params.get("output_format", "mp3_44100_128")
        try:
            rendered_voice(output_format)
        except ValueError as e:
            await ws.close(code=1008, reason=str(e))
            return
        await ws.accept()
        stats.connections += 1
        session = _Session(
            ws,
            output_format,
            ws.query_params.get("auto_mode", "false").lower() == "true",
            profile,
            multi,
            stats,
        )
        authorized = _has_key(ws, None)
        try:
            while True:
                try:
                    msg = json.loads(await ws.receive_text())
                except json.JSONDecodeError:
                    await ws.close(code=1007, reason="invalid JSON")
                    return
                if not authorized and not (authorized := _has_key(ws, msg)):
                    await ws.close(code=1008, reason="unauthorized: send xi-api-key")
                    return
                if not await _handle(session, msg, multi):
                    return
        except WebSocketDisconnect:
            return
        finally:
            session.close()

    @app.websocket("/v1/text-to-speech/{voice_id}/multi-stream-input")
    async def multi_stream_input(ws: WebSocket, voice_id: str) -> None:
        await serve(ws, multi=True)

    @app.websocket("/v1/text-to-speech/{voice_id}/stream-input")
    async def stream_input(ws: WebSocket, voice_id: str) -> None:
        await serve(ws, multi=False)

    return app


async def _handle(session: _Session, msg: dict, multi: bool) -> bool:
    """Apply one client message; False once the socket is closed."""
    if multi and msg.get("close_socket"):
        for ctx in list(session.contexts.values()):
            session.finish(ctx)
        await session.drain()
        await session.ws.close(code=1000)
        return False
    text = msg.get("text")
    if multi and text == "" and not msg.get("close_context"):
        return True  # keep-alive: Pipecat sends "" on multi-stream-input, where it is not end of stream
    ctx = session.context(msg.get("context_id") if multi else None)
    if multi and msg.get("close_context"):
        session.finish(ctx)
    elif text == "" and not multi:  # end of stream
        session.finish(ctx)
        await session.drain()
        await session.ws.close(code=1000)
        return False
    elif text is not None:
        session.add_text(ctx, text, flush=bool(msg.get("flush")))
    elif msg.get("flush"):
        session.add_text(ctx, "", flush=True)
    else:
        logger.debug(f"elevenlabs emulator: ignoring message with keys {sorted(msg)}")
    return True
