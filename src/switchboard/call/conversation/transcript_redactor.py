"""``llm_sees_pii: false``: the caller's transcripts redacted before the responder reads them."""

from __future__ import annotations

from collections.abc import Iterable

from pipecat.frames.frames import Frame, InterimTranscriptionFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from switchboard.privacy.text import redact_text


class TranscriptRedactor(FrameProcessor):
    """Sits after the STT: each transcript goes on with the agent's PII types replaced."""

    def __init__(self, entities: Iterable[str], **kwargs):
        super().__init__(**kwargs)
        self._entities = list(entities)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame | InterimTranscriptionFrame):
            try:
                frame.text = redact_text(frame.text, self._entities)
            except Exception:  # the turn goes on; the responder must not get the raw text either
                frame.text = "[UNHEARD]"
        await self.push_frame(frame, direction)
