"""A fake agent whose delay is known: the truth every latency instrument is checked against.

It speaks Twilio's Media Streams protocol like a real agent server. It greets with a tone,
then answers every caller utterance with a tone exactly ``delay_ms`` (± uniform ``jitter_ms``)
after the *arrival* of the last media frame that carried a non-zero sample. Known-end clips
end on a frame boundary and are followed by digital silence, so that arrival is the caller's
end of speech plus the network: a correct instrument reads the delay it was given.

``GET /turns`` returns, by CallSid, the delay each reply actually had: from that arrival to
the moment its first frame was written to the socket (the planned delay plus however late
this process's event loop woke up, so a busy machine does not count against the instrument).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from twilio.twiml.voice_response import Connect, VoiceResponse

from switchboard.audio import TELEPHONY_FRAME_BYTES, TELEPHONY_RATE, ulaw_decode, ulaw_encode

TONE_HZ = 440.0
TONE_DBFS = -20.0
REPLY_MS = 400


def tone(ms: int, hz: float = TONE_HZ, dbfs: float = TONE_DBFS) -> bytes:
    """A sine tone as µ-law bytes."""
    t = np.arange(TELEPHONY_RATE * ms // 1000) / TELEPHONY_RATE
    amplitude = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return ulaw_encode(np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16))


class _FakeCall:
    """One media stream: greets, waits for the caller to stop, answers after the known delay."""

    def __init__(self, ws: WebSocket, delay_ms: float, jitter_ms: float, rng: random.Random):
        self._ws = ws
        self._delay_ms, self._jitter_ms, self._rng = delay_ms, jitter_ms, rng
        self._stream_sid = ""
        self._last_speech_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.call_sid = ""
        self.delays_ms: list[float] = []

    async def run(self, calls: dict[str, list[float]]) -> None:
        try:
            while True:
                message = json.loads(await self._ws.receive_text())
                event = message.get("event")
                if event == "start":
                    self._stream_sid = message["streamSid"]
                    self.call_sid = message["start"].get("callSid", self._stream_sid)
                    calls[self.call_sid] = self.delays_ms
                    self._speak(0.0, None)
                elif event == "media":
                    self._on_audio(base64.b64decode(message["media"]["payload"]))
                elif event == "stop":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            for task in self._tasks:
                task.cancel()

    def _on_audio(self, payload: bytes) -> None:
        now = time.monotonic()
        if np.any(ulaw_decode(payload)):
            self._last_speech_at = now
        elif self._last_speech_at is not None:
            delay = self._delay_ms + self._rng.uniform(-self._jitter_ms, self._jitter_ms)
            self._speak(max(0.0, self._last_speech_at + delay / 1000 - now), self._last_speech_at)
            self._last_speech_at = None

    def _speak(self, after_s: float, speech_end_at: float | None) -> None:
        task = asyncio.create_task(self._send_tone(after_s, speech_end_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_tone(self, after_s: float, speech_end_at: float | None) -> None:
        await asyncio.sleep(after_s)
        if speech_end_at is not None:
            self.delays_ms.append(round((time.monotonic() - speech_end_at) * 1000, 1))
        audio = tone(REPLY_MS)
        for i in range(0, len(audio), TELEPHONY_FRAME_BYTES):
            payload = base64.b64encode(audio[i : i + TELEPHONY_FRAME_BYTES]).decode()
            media = {"event": "media", "streamSid": self._stream_sid, "media": {"payload": payload}}
            await self._ws.send_text(json.dumps(media))


def fake_agent_app(delay_ms: float, jitter_ms: float = 0.0, seed: int = 1) -> FastAPI:
    """The fake agent as an ASGI app: ``/twilio/voice``, ``/twilio/media``, ``/turns``, ``/health``."""
    app = FastAPI(title="Switchboard fake agent")
    calls: dict[str, list[float]] = {}
    rng = random.Random(seed)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/twilio/voice")
    async def voice(request: Request) -> Response:
        twiml = VoiceResponse()
        connect = Connect()
        connect.stream(url=str(request.base_url).replace("http", "ws", 1) + "twilio/media")
        twiml.append(connect)
        return Response(str(twiml), media_type="application/xml")

    @app.websocket("/twilio/media")
    async def media(ws: WebSocket) -> None:
        await ws.accept()
        await _FakeCall(ws, delay_ms, jitter_ms, rng).run(calls)

    @app.get("/turns")
    async def turns() -> dict[str, list[float]]:
        return calls

    return app


@contextmanager
def serve_fake_agents(configs: list[tuple[float, float, int]]) -> Iterator[list[str]]:
    """One fake agent per ``(delay_ms, jitter_ms, seed)``, each in a process of its own on an
    ephemeral loopback port; yields their URLs in order.

    Their own processes, as real agent servers are: served from threads of the measuring
    process, they would share its GIL with the instrument, and each would read the other's
    scheduling delays (up to ~15 ms with six agents and six calls on two cores)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "switchboard.loadtest.fake_agent", "--delay-ms", str(delay),
             "--jitter-ms", str(jitter), "--seed", str(seed)],  # fmt: skip
            stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        )
        for delay, jitter, seed in configs
    ]
    try:
        urls = []
        for process in processes:  # all start at once; each prints its URL when it listens
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("http://"):
                raise RuntimeError(f"fake agent did not start (exit {process.poll()})")
            urls.append(line.strip())
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _serve(delay_ms: float, jitter_ms: float, seed: int) -> None:
    import uvicorn

    config = uvicorn.Config(fake_agent_app(delay_ms, jitter_ms, seed), host="127.0.0.1", port=0,
                            log_level="warning", ws="websockets-sansio")  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a fake agent of known delay; prints its URL.")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(_serve(args.delay_ms, args.jitter_ms, args.seed))


if __name__ == "__main__":
    main()
