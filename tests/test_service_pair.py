"""The provider fallback without inner pipelines: routing, lifecycle, and the STT hand-over, in-process."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    ServiceMetadataFrame,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from switchboard.engines.resilience import (
    BreakerState,
    CircuitBreaker,
    EngineKind,
    FallbackSwitcher,
)
from switchboard.engines.service_pair import ServicePair


class _Service(FrameProcessor):
    """A stand-in service: keeps what reaches it and passes it on."""

    def __init__(
        self,
        name: str,
        *,
        start_delay: float = 0.0,
        says_on_start: str | None = None,
        direct: bool = False,
    ):
        super().__init__(name=name, enable_direct_mode=direct)
        self.seen: list[Frame] = []
        self._start_delay = start_delay
        self._says_on_start = says_on_start

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        self.seen.append(frame)
        if isinstance(frame, StartFrame) and self._start_delay:
            await asyncio.sleep(self._start_delay)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._says_on_start:
            # As Pipecat's services announce themselves: a system frame right behind the start.
            await self.push_frame(ServiceMetadataFrame(service_name=self._says_on_start))


class _DyingSTT(FrameProcessor):
    """A cloud STT whose socket dies at the end of the caller's first utterance."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self.push_error("socket closed (1006)")
        elif not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)


def _types(frames: list[Frame]) -> list[type]:
    return [type(f) for f in frames]


async def test_frames_reach_the_active_service_only_and_lifecycle_frames_leave_once() -> None:
    primary, fallback = _Service("primary"), _Service("fallback")
    down, _ = await run_test(
        ServicePair(primary, fallback),
        frames_to_send=[TextFrame("hello")],
        ignore_start=False,
    )
    assert _types(down) == [StartFrame, TextFrame]
    assert _types(primary.seen) == [StartFrame, TextFrame, EndFrame]
    assert _types(fallback.seen) == [StartFrame, EndFrame]


async def test_what_the_idle_fallback_pushes_goes_nowhere() -> None:
    primary, fallback = _Service("primary"), _Service("fallback", says_on_start="fallback")
    down, _ = await run_test(
        ServicePair(primary, fallback), frames_to_send=[TextFrame("hello")]
    )
    assert _types(down) == [TextFrame]


async def test_the_start_leaves_once_both_services_started_with_what_came_meanwhile_behind_it() -> None:
    # The primary announces itself as soon as it has started; the fallback takes 200 ms to start.
    # A processor must not see the announcement (a system frame: no queue holds it back) first.
    # (A processor in direct mode, as the ones after the STT may be, handles what it is given at once.)
    primary = _Service("primary", says_on_start="primary")
    fallback = _Service("fallback", start_delay=0.2)
    after = _Service("after", direct=True)
    await run_test(
        Pipeline([ServicePair(primary, fallback), after]), frames_to_send=[SleepFrame(0.3)]
    )
    assert _types(after.seen)[:2] == [StartFrame, ServiceMetadataFrame]


async def test_a_dying_stt_hands_the_whole_utterance_to_the_fallback_and_opens_the_breaker() -> None:
    fallback = _Service("whisper")
    breaker = CircuitBreaker("dying-stt", failure_threshold=1, reset_secs=60)
    switcher = FallbackSwitcher(
        _DyingSTT(),
        fallback,
        provider="dying-stt",
        kind=EngineKind.STT,
        breaker=breaker,
        response_timeout_secs=5,
    )
    audio = [InputAudioRawFrame(bytes(640), 16000, 1) for _ in range(5)]
    later = TranscriptionFrame("after the switch", "", "t")
    _, up = await run_test(
        switcher,
        frames_to_send=[
            VADUserStartedSpeakingFrame(),
            *audio,
            VADUserStoppedSpeakingFrame(),
            SleepFrame(0.2),
            later,
            SleepFrame(0.1),
        ],
    )
    heard = [
        f
        for f in fallback.seen
        if isinstance(f, VADUserStartedSpeakingFrame | InputAudioRawFrame | VADUserStoppedSpeakingFrame)
        or f is later
    ]
    # The utterance from its VAD start, replayed in order, then what came after the switch.
    assert heard[0].__class__ is VADUserStartedSpeakingFrame
    assert [f for f in heard if isinstance(f, InputAudioRawFrame)] == audio
    assert any(isinstance(f, VADUserStoppedSpeakingFrame) for f in heard)
    assert heard[-1] is later
    assert not switcher.on_primary and breaker.state is BreakerState.OPEN
    # The provider's error was answered by the switch: it does not travel on.
    assert not any(isinstance(f, ErrorFrame) for f in up)
