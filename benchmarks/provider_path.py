"""CPU of the provider path per call, in-process: the STT fallback wrapper per frame and a call's
Deepgram service build, each beside what it replaced (Pipecat's ``ServiceSwitcher``, Pipecat's
``DeepgramSTTService`` building its own SDK client).

Process CPU time (not wall time), so the figures hold on a machine other work shares; each
measurement is the best of ``--repeat`` runs. A caller's audio at the sweep's 40 ms chunks is
25 frames a second per call: ``µs/frame × 25 / 10⁴`` is the wrapper's % of a core per call.

    .venv/bin/python benchmarks/provider_path.py [--frames 4000] [--builds 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyManual
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.tests.utils import run_test

from switchboard.engines.deepgram import build_deepgram_stt
from switchboard.engines.service_pair import ServicePair
from switchboard.settings import Settings


class _Service(FrameProcessor):
    """A service that costs nothing of its own: what is measured is the path around it."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


def _frames(n: int) -> list[Frame]:
    return [InputAudioRawFrame(bytes(1280), 16000, 1) for _ in range(n)]


async def _cpu_per_frame(make, frames: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        processor = make()
        batch = _frames(frames)
        start = time.process_time()
        await run_test(processor, frames_to_send=batch)
        best = min(best, time.process_time() - start)
    return best / frames * 1e6


def _cpu_per_build(build, builds: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        services = [build() for _ in range(builds)]
        best = min(best, time.process_time() - start)
        del services
    return best / builds * 1e3


async def main_async(args: argparse.Namespace) -> None:
    n, r = args.frames, args.repeat
    bare = await _cpu_per_frame(_Service, n, r)
    switcher = await _cpu_per_frame(
        lambda: ServiceSwitcher([_Service(), _Service()], ServiceSwitcherStrategyManual), n, r
    )
    pair = await _cpu_per_frame(lambda: ServicePair(_Service(), _Service()), n, r)
    print(f"fallback wrapper, CPU per 40 ms audio frame (the pipeline around it included): "
          f"service alone {bare:.0f} µs, Pipecat ServiceSwitcher {switcher:.0f} µs "
          f"(+{switcher - bare:.0f}), ServicePair {pair:.0f} µs (+{pair - bare:.0f})")
    url = "ws://127.0.0.1:9"
    settings = Settings(**{"DEEPGRAM_API_KEY": "dg-bench"}, deepgram_url=url)
    pipecat = _cpu_per_build(lambda: DeepgramSTTService(api_key="dg-bench", base_url=url), args.builds, r)
    ours = _cpu_per_build(lambda: build_deepgram_stt(settings), args.builds, r)
    print(f"a call's Deepgram service, CPU to build: Pipecat's (own SDK client) {pipecat:.1f} ms, "
          f"switchboard's (the process's client) {ours:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
