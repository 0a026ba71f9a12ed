"""An input transport that can hand the caller's audio to a stage instead of the pipeline.

Pipecat's input transport puts every audio chunk on a queue and pushes it down the pipeline,
one asyncio hand-off per processor. With a :class:`CallerAudioSink` attached (the call's media
stage, :mod:`switchboard.call.conversation.media_stage`), a chunk goes to the sink where the
transport read it, and the pipeline sees only the events the sink pushes from this processor.
Without one the transport is Pipecat's, unchanged.
"""

from __future__ import annotations

from typing import Protocol

from pipecat.frames.frames import CancelFrame, EndFrame, InputAudioRawFrame, StartFrame
from pipecat.processors.frame_processor import FrameProcessor, FrameProcessorSetup
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from starlette.websockets import WebSocket


class CallerAudioSink(Protocol):
    """Takes a call's caller audio in place of the pipeline; lives as long as the input transport."""

    async def setup(self, source: FrameProcessor, setup: FrameProcessorSetup) -> None:
        """``source``: the processor the sink pushes its events from (the input transport)."""

    async def start(self) -> None: ...

    async def hear(self, frame: InputAudioRawFrame) -> None: ...

    async def stop(self) -> None: ...

    async def cleanup(self) -> None: ...


class StagedWebsocketInputTransport(FastAPIWebsocketInputTransport):
    """Pipecat's WebSocket input, whose audio goes to a sink once one is attached."""

    _sink: CallerAudioSink | None = None

    def hand_audio_to(self, sink: CallerAudioSink) -> None:
        """From now on the caller's audio goes to ``sink`` (before the pipeline starts)."""
        self._sink = sink

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        if self._sink is not None:
            await self._sink.setup(self, setup)

    async def start(self, frame: StartFrame):
        # Before the receive loop starts: the first chunk finds the sink ready.
        if self._sink is not None:
            await self._sink.start()
        await super().start(frame)

    async def stop(self, frame: EndFrame):
        await super().stop(frame)
        if self._sink is not None:
            await self._sink.stop()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        if self._sink is not None:
            await self._sink.stop()

    async def cleanup(self):
        await super().cleanup()
        if self._sink is not None:
            await self._sink.cleanup()

    async def push_audio_frame(self, frame: InputAudioRawFrame):
        if self._sink is None:
            await super().push_audio_frame(frame)
        elif self._params.audio_in_enabled and not self._paused:
            await self._sink.hear(frame)


class StagedWebsocketTransport(FastAPIWebsocketTransport):
    """Pipecat's FastAPI WebSocket transport with a :class:`StagedWebsocketInputTransport`."""

    def __init__(self, websocket: WebSocket, params: FastAPIWebsocketParams, **kwargs):
        super().__init__(websocket, params, **kwargs)
        self._input = StagedWebsocketInputTransport(
            self, self._client, self._params, name=self._input_name
        )

    def input(self) -> StagedWebsocketInputTransport:
        return self._input  # type: ignore[return-value]
