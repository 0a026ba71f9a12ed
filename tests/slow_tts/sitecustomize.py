"""Test-only fault injection for tests/test_agent_suites.py: a worker started with this folder on
PYTHONPATH makes the local TTS's first audio of every line wait the number of milliseconds
written in SWITCHBOARD_TEST_TTS_DELAY_FILE (read at each line, so a test can change it live):
a slower TTS, and nothing else different."""

import asyncio
import os
from pathlib import Path

_DELAY_FILE = os.environ.get("SWITCHBOARD_TEST_TTS_DELAY_FILE")

if _DELAY_FILE:
    from switchboard.engines import piper_tts

    _chunks = piper_tts.LocalPiperTTSService._audio_chunks

    def _delay_ms() -> float:
        try:
            return float(Path(_DELAY_FILE).read_text() or 0)
        except (OSError, ValueError):
            return 0.0

    async def _slower_chunks(self, text):
        delay_ms = _delay_ms()
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        async for chunk in _chunks(self, text):
            yield chunk

    piper_tts.LocalPiperTTSService._audio_chunks = _slower_chunks
