"""Pipecat's observer proxy, handing each observer only the frames it looks at.

Pipecat's ``WorkerObserver`` queues every push of every frame (a caller's 20 ms audio frame
is pushed ~10 times on its way through a call's pipeline) and every processor's processing of
it to each observer, through an asyncio queue and a task per observer. A call has four
observers (turn timings, call control, the call record, Pipecat's idle watchdog) that look at
a handful of control frames, so nearly all of that traffic, ~2,000 queue hand-offs a second per
call, fed observers that ignore it. Here an observer says which frame types it wants
(``frame_types``; none said: every frame, as in Pipecat), and ``on_process_frame`` reaches
only observers that implement it.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, StartFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker import IdleFrameObserver, PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver

FrameTypes = tuple[type[Frame], ...]


def wanted_frames(observer: BaseObserver) -> FrameTypes | None:
    """The frame types ``observer`` looks at (None: all of them)."""
    if isinstance(observer, IdleFrameObserver):
        return (StartFrame, *observer._idle_timeout_frames)
    return getattr(observer, "frame_types", None)


def _observes_processing(observer: BaseObserver) -> bool:
    return type(observer).on_process_frame is not BaseObserver.on_process_frame


class SelectiveWorkerObserver(WorkerObserver):
    """``WorkerObserver`` that filters by each observer's ``frame_types`` before queueing."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._wanted: dict[BaseObserver, FrameTypes | None] = {}

    async def on_process_frame(self, data: FrameProcessed):
        for proxy in (self._proxies or {}).values():
            if _observes_processing(proxy.observer):
                await proxy.queue.put(data)

    async def on_push_frame(self, data: FramePushed):
        if not self._proxies:
            return
        frame = data.frame
        first_push: bool | None = None  # worked out only if an observer wants the frame
        for proxy in self._proxies.values():
            observer = proxy.observer
            if observer not in self._wanted:  # once per observer, not once per push
                self._wanted[observer] = wanted_frames(observer)
            types = self._wanted[observer]
            if types is not None and not isinstance(frame, types):
                continue
            if first_push is None:
                first_push = frame.id not in self._frames_pushed
                if first_push:
                    self._frames_pushed[frame.id] = frame
                data.first_push = first_push
            if first_push or observer.observe_every_push:
                await proxy.queue.put(data)


class CallPipelineWorker(PipelineWorker):
    """A ``PipelineWorker`` whose observers are fed by :class:`SelectiveWorkerObserver`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Pipecat builds its proxy in __init__ and hands it to processors only at setup, so
        # swapping it here, with the observers it already holds, is seen by every processor.
        self._observer = SelectiveWorkerObserver(observers=self._observer._observers)
