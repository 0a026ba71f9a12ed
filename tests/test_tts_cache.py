"""Piper's fixed lines survive a restart on disk (SWITCHBOARD_TTS_CACHE_DIR): synthesized once."""

from pathlib import Path

import pytest

from switchboard.engines.piper_tts import shared_piper

LINES = ["Hello, this is the test line. Please say something.", "You talked about food."]


def test_a_restarted_engine_reads_its_fixed_lines_from_disk_instead_of_synthesizing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = shared_piper()
    monkeypatch.setattr(engine, "_cache", type(engine._cache)())  # a process that just started
    engine.prewarm(LINES, disk_cache=tmp_path)
    spoken = {text: engine.cached(text) for text in [*LINES, "Hello, this is the test line."]}
    assert all(spoken.values()) and len(list(tmp_path.glob("*.pcm"))) == 4  # 2 lines + 2 sentences

    engine._cache.clear()  # restarted: memory empty, the disk as it was

    def no_synthesis(text: str) -> bytes:
        raise AssertionError(f"synthesized {text!r} again")

    monkeypatch.setattr(engine, "synthesize", no_synthesis)
    engine.prewarm(LINES, disk_cache=tmp_path)
    assert {text: engine.cached(text) for text in spoken} == spoken
    assert not list(tmp_path.glob("*.tmp")), "only whole files are left"
