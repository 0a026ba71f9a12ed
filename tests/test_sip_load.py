"""SIP callers spread over processes hold more calls at once than one PJSIP process can (four),
each call timed as one phone times it (against the fake SIP agent of known delay)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.loadtest.fake_sip_agent import FakeSipAgent
from switchboard.loadtest.known_end import load_manifest

pytest.importorskip("pjsua2")
from switchboard.loadtest.rtp_tap import tap_available  # noqa: E402
from switchboard.loadtest.sip_load import CALLS_PER_PROCESS, SipSlot, run_sip_load  # noqa: E402

CLIPS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "clips"
CLIP = next(c for c in load_manifest(CLIPS_DIR) if c.source == "pocketsphinx_cards_003_16k.wav")
DELAY_MS = 300
TOLERANCE_MS = 15


def test_six_callers_in_two_processes_are_all_on_a_call_at_once_and_timed_on_the_wire() -> None:
    if not tap_available():
        pytest.skip("reading RTP off loopback needs CAP_NET_RAW")
    slots = [SipSlot(delay_s=i * 0.1, calls=((CLIP,),)) for i in range(CALLS_PER_PROCESS + 2)]
    up: list[int] = []
    with FakeSipAgent(delay_ms=DELAY_MS) as agent:
        run = run_sip_load(agent.uri, "+15105550166", slots, on_active=up.append)
        truths = [t for turns in agent.turns().values() for t in turns]

    assert run.processes == 2
    assert max(up) == len(slots)  # more calls up at once than one process could place
    assert [c.slot for c in run.calls] == list(range(len(slots)))
    assert all(c.answered and c.failure is None for c in run.calls), run.calls
    wire = [t.voice_to_voice_ms for c in run.calls for t in c.wire]
    assert len(wire) == len(slots) and None not in wire, run.calls
    assert len(truths) == len(slots)
    assert all(min(truths) - TOLERANCE_MS <= ms <= max(truths) + TOLERANCE_MS for ms in wire), (wire, truths)
    assert run.caller_cpu_s > 0
