"""The caller simulator on hold: Twilio's part of a ``<Say>``/``<Play>``/``<Redirect>`` loop.

While a call holds, Twilio says the lines, plays the audio (the simulator fetches it, checks it
is audible and waits its length), then posts the ``<Redirect>``; a REST update of the call (read
from the Twilio emulator) ends the document at once, as it does on Twilio. What it heard goes in
the call's :class:`~switchboard.loadtest.report.HoldSeen`.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import wave
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import numpy as np

from switchboard.audio import frame_dbfs
from switchboard.loadtest.report import HoldSeen

_POSITION = re.compile(r"number (\d+) in line", re.IGNORECASE)
_UNREADABLE_PLAY_SECS = 5.0  # audio we cannot read still takes Twilio some time to play
_AUDIBLE_DBFS = -50.0
_POLL_SECS = 0.1
_MAX_AUDIO_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class HoldDocument:
    """A TwiML document that holds the call: lines, audio, and where Twilio goes after."""

    says: list[str]
    plays: list[str]
    redirect: str | None


def hold_document(root: ET.Element) -> HoldDocument | None:
    """The hold loop in ``root``; None if it ends, transfers or streams the call instead."""
    if any(root.find(verb) is not None for verb in ("Hangup", "Reject", "Dial", "Connect")):
        return None
    plays = [(p.text or "").strip() for p in root.findall("Play") if (p.text or "").strip()]
    redirect = root.find("Redirect")
    target = (redirect.text or "").strip() if redirect is not None else ""
    if not plays and not target:
        return None
    says = [(s.text or "").strip() for s in root.findall("Say")]
    return HoldDocument(says, plays, target or None)


class HoldFollower:
    """Follows one call's hold loop until a document that is not one."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        seen: HoldSeen,
        post: Callable[[str], Awaitable[str]],
        updates: Callable[[], Awaitable[str | None]],
        started: float,
    ):
        """``post``: posts a ``<Redirect>`` URL as Twilio does and returns the TwiML text;
        ``updates``: TwiML a REST update gave the call since last asked (None: none);
        ``started``: ``time.monotonic()`` when the call's webhook was posted."""
        self._client = client
        self.seen = seen
        self._post = post
        self._updates = updates
        self._started = started
        self._lengths: dict[str, float] = {}

    def _now(self) -> float:
        return time.monotonic() - self._started

    async def follow(self, document: HoldDocument) -> str:
        """Hold until the call is given something else; returns that TwiML."""
        while True:
            self.seen.rounds += 1
            for line in document.says:
                self.seen.lines.append(line)
                if match := _POSITION.search(line):
                    self.seen.positions.append(int(match.group(1)))
            for url in document.plays:
                self.seen.hold_audio_url = url
                length, audible = await self._audio(url)
                moved, played = await self._play(length)
                if audible:
                    self.seen.hold_audio_s = round(self.seen.hold_audio_s + played, 3)
                if moved is not None:
                    self.seen.moved_by_rest = True
                    return self._left(moved)
            if document.redirect is None:
                return self._left("<Response><Hangup/></Response>")
            text = await self._post(document.redirect)
            try:
                following = hold_document(ET.fromstring(text))
            except ET.ParseError:
                following = None
            if following is None:
                return self._left(text)
            document = following

    def _left(self, twiml: str) -> str:
        self.seen.left_at_s = round(self._now(), 3)
        self.seen.connected = "<Stream" in twiml
        return twiml

    async def _play(self, secs: float) -> tuple[str | None, float]:
        """Wait ``secs`` as the audio plays; a REST update's TwiML ends it early. Returns that
        TwiML (None: it played out) and the seconds played."""
        began = time.monotonic()
        while True:
            if (update := await self._updates()) is not None:
                return update, min(secs, time.monotonic() - began)
            left = began + secs - time.monotonic()
            if left <= 0:
                return None, secs
            await asyncio.sleep(min(_POLL_SECS, left))

    async def _audio(self, url: str) -> tuple[float, bool]:
        """The audio's length and whether it is audible (a WAV we can read); cached per URL."""
        if url in self._lengths:
            return self._lengths[url], self._lengths[url] > 0
        length, audible = _UNREADABLE_PLAY_SECS, False
        try:
            response = await self._client.get(url)
            if response.status_code == 200 and len(response.content) <= _MAX_AUDIO_BYTES:
                length, audible = _wav_length_and_level(response.content)
        except (httpx.HTTPError, wave.Error, EOFError, ValueError):
            pass
        self._lengths[url] = length if audible else 0.0
        return length, audible


def _wav_length_and_level(data: bytes) -> tuple[float, bool]:
    with wave.open(io.BytesIO(data)) as w:
        frames = w.readframes(w.getnframes())
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
    if width != 2 or rate <= 0:
        return _UNREADABLE_PLAY_SECS, False
    samples = np.frombuffer(frames, dtype="<i2")
    length = len(samples) / channels / rate
    return length, float(frame_dbfs(samples, rate * channels).max(initial=-120.0)) > _AUDIBLE_DBFS
