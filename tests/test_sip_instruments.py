"""The SIP phone's timing, checked against the fake SIP agent's known delay: on the wire at its
RTP port within ±15 ms like every other instrument; at its ear, later by its own jitter buffer
and media clock, by a bounded amount (which the LiveKit benchmark reports beside its figures)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port
from switchboard.loadtest.known_end import load_manifest
from switchboard.loadtest.validation import Reading, validate_sip_calls

pytest.importorskip("pjsua2")
from switchboard.loadtest.rtp_tap import RtpTap, tap_available  # noqa: E402
from switchboard.loadtest.sip_phone import shared_line  # noqa: E402

CLIPS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "clips"
CLIPS = [c for c in load_manifest(CLIPS_DIR) if c.source in {
    "pocketsphinx_cards_003_16k.wav", "osr_us_0010_s02_8k.wav", "cmu_arctic_aew_a0003_16k.wav"}]
CONFIGS = [(300, 0), (500, 20), (800, 20)]
TOLERANCE_MS = 15
# PJSIP plays a frame on its next 20 ms clock tick, behind an adaptive jitter buffer (20-60 ms
# here, more when the machine is busy); never before the packet came.
EAR_LAG_MS = (0, 120)


@pytest.fixture(scope="module")
def readings() -> Iterator[list[Reading]]:
    if not tap_available():
        pytest.skip("reading RTP off loopback needs CAP_NET_RAW")
    with RtpTap() as tap:
        yield validate_sip_calls(shared_line().phone("+15105550177", free_port()), CONFIGS, CLIPS, tap)


def of(readings: list[Reading], instrument: str) -> list[Reading]:
    return [r for r in readings if r.instrument == instrument]


def test_every_turn_of_every_call_is_read_both_ways(readings: list[Reading]) -> None:
    for instrument in ("sip phone, on the wire", "sip phone, at its ear"):
        assert len(of(readings, instrument)) == len(CONFIGS) * len(CLIPS), readings


def test_the_wire_reading_is_the_known_delay(readings: list[Reading]) -> None:
    wire = of(readings, "sip phone, on the wire")
    jittered = [r.truth_ms for r in wire if r.jitter_ms]
    assert max(jittered) - min(jittered) > 1  # the agent really varied, and the reading followed
    assert all(r.error_ms is not None and abs(r.error_ms) <= TOLERANCE_MS for r in wire), wire


def test_the_ear_hears_it_later_by_a_bounded_lag(readings: list[Reading]) -> None:
    ear = of(readings, "sip phone, at its ear")
    lags = [r.error_ms for r in ear]
    assert all(lag is not None and EAR_LAG_MS[0] <= lag <= EAR_LAG_MS[1] for lag in lags), lags
