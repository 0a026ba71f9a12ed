"""The call pipeline's observer proxy hands each observer only the frames it reads."""

from pipecat.frames.frames import EndFrame, InputAudioRawFrame, TextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from switchboard.call.conversation.observers import CallPipelineWorker


class PassOn(FrameProcessor):
    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class Seen(BaseObserver):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pushes: list[FramePushed] = []

    async def on_push_frame(self, data: FramePushed):
        self.pushes.append(data)


class TextOnly(Seen):
    frame_types = (TextFrame,)


async def test_an_observer_gets_every_push_of_the_frames_it_names_and_no_other() -> None:
    text_only, everything, first_only = TextOnly(), Seen(), TextOnly(observe_every_push=False)
    worker = CallPipelineWorker(
        Pipeline([PassOn(), PassOn(), PassOn()]),
        observers=[text_only, everything],
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    worker.add_observer(first_only)  # added before start, like the call controller
    audio = InputAudioRawFrame(audio=b"\0\0" * 320, sample_rate=16000, num_channels=1)
    await worker.queue_frames([TextFrame("hello"), audio, TextFrame("again"), EndFrame()])
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    await runner.run()

    texts = [p.frame.text for p in text_only.pushes]
    assert {type(p.frame) for p in text_only.pushes} == {TextFrame}
    # Pushed by the worker's source, three processors and the inner pipeline's edges.
    assert texts.count("hello") == texts.count("again") > 1
    assert [p.frame.text for p in first_only.pushes] == ["hello", "again"]
    assert all(p.first_push for p in first_only.pushes)
    kinds = {type(p.frame) for p in everything.pushes}
    assert {TextFrame, InputAudioRawFrame, EndFrame} <= kinds
