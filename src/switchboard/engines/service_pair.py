"""``ServicePair``: one processor holding two services, a call's frames routed through the active one.

It does what Pipecat's ``ServiceSwitcher`` does for a primary and its fallback without the
machinery that costs a worker ~8 % at 25 cloud calls: the switcher is a ``ParallelPipeline`` of
two inner pipelines (source, filter, service, filter, sink each), so every frame took four extra
queue hand-offs and left its id in a set that grew for the whole call. Here a frame goes from
the processor before the pair straight into the active service's queue (the pair runs in the
caller's task), and what the service pushes, either way, comes straight back out through the
pair. The services are set up, started and stopped with the pair: both see ``StartFrame``,
``EndFrame`` and ``CancelFrame``, which leave the pair once both have passed them (what the
active service pushes meanwhile waits behind them, in order); anything else reaches the active
service only, and whatever the inactive one pushes goes no further.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    ServiceSwitcherRequestMetadataFrame,
    StartFrame,
)
from pipecat.pipeline.base_pipeline import BasePipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup

LIFECYCLE_FRAMES = (StartFrame, EndFrame, CancelFrame)


class _ServiceExit(FrameProcessor):
    """Both neighbours of a held service: what the service pushes goes back to its pair."""

    def __init__(self, pair: ServicePair, service: FrameProcessor):
        super().__init__(name=f"{pair}::exit::{service}", enable_direct_mode=True)
        self._pair = pair
        self._service = service

    async def queue_frame(self, frame: Frame, direction=FrameDirection.DOWNSTREAM, callback=None):
        await self._pair._from_service(self._service, frame, direction)


class ServicePair(BasePipeline):
    """A primary service and its fallback; the primary is active until :meth:`switch_to_fallback`.

    Subclasses watch what goes in (:meth:`process_frame`) and what the active service answers
    (:meth:`service_output`) to decide when to switch.
    """

    def __init__(self, primary: FrameProcessor, fallback: FrameProcessor, **kwargs):
        super().__init__(enable_direct_mode=True, **kwargs)
        self._primary = primary
        self._fallback = fallback
        self._active = primary
        for service in (primary, fallback):
            exit_ = _ServiceExit(self, service)
            exit_.link(service)  # the service's upstream neighbour
            service.link(exit_)  # and its downstream one
        # Lifecycle frames on their way through both services: how many have still to pass each.
        self._passing: dict[int, int] = {}
        self._held: list[tuple[Frame, FrameDirection]] = []

    @property
    def services(self) -> list[FrameProcessor]:
        return [self._primary, self._fallback]

    @property
    def active_service(self) -> FrameProcessor:
        return self._active

    @property
    def on_primary(self) -> bool:
        return self._active is self._primary

    @property
    def processors(self) -> list[FrameProcessor]:
        return self.services

    @property
    def is_usable(self) -> bool:
        """Usable while either service is: the pair does its job as long as one can."""
        return self._primary.is_usable or self._fallback.is_usable

    def processors_with_metrics(self) -> list[FrameProcessor]:
        found = []
        for service in self.services:
            if service.can_generate_metrics():
                found.append(service)
            found.extend(service.processors_with_metrics())
        return found

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        # The pair may start now: each service holds the StartFrame until its own setup is done.
        self._setup_finished()
        await self._setup_processors(self.services, setup)

    async def cleanup(self):
        await super().cleanup()
        await self._cleanup_processors(self.services)

    async def switch_to_fallback(self) -> bool:
        """Make the fallback the active service, unless it can no longer do its job."""
        if not self._fallback.is_usable:
            return False
        self._active = self._fallback
        # The fallback announces itself (an STT its latency, say) to the processors after the pair.
        await self._fallback.queue_frame(ServiceSwitcherRequestMetadataFrame(service=self._fallback))
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, LIFECYCLE_FRAMES):
            self._passing[frame.id] = 2
            await self._primary.queue_frame(frame, direction)
            await self._fallback.queue_frame(frame, direction)
        else:
            await self._active.queue_frame(frame, direction)

    async def service_output(self, frame: Frame, direction: FrameDirection) -> bool:
        """A frame the active service pushed; True if the subclass consumed it."""
        return False

    async def _from_service(
        self, service: FrameProcessor, frame: Frame, direction: FrameDirection
    ) -> None:
        if frame.id in self._passing and isinstance(frame, LIFECYCLE_FRAMES):
            await self._lifecycle_passed(frame, direction)
            return
        if service is not self._active:
            return
        if isinstance(frame, ServiceSwitcherRequestMetadataFrame):
            return  # answered: the service pushed its metadata before this
        if await self.service_output(frame, direction):
            return
        if self._passing:
            self._held.append((frame, direction))
        else:
            await self.push_frame(frame, direction)

    async def _lifecycle_passed(self, frame: Frame, direction: FrameDirection) -> None:
        left = self._passing[frame.id] - 1
        if left:
            self._passing[frame.id] = left
            return
        del self._passing[frame.id]
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._release_held()
        else:
            await self._release_held()
            await self.push_frame(frame, direction)

    async def _release_held(self) -> None:
        if self._passing:
            return  # another lifecycle frame is still on its way through
        held, self._held = self._held, []
        for frame, direction in held:
            await self.push_frame(frame, direction)
