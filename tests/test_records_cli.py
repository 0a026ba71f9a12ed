"""``switchboard records ...`` and ``switchboard analyze CALL_ID`` on a real history database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from switchboard.records.models import RecordingRef, StoredCall
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import CallStore

RATE = 16000


def two_turn_recording() -> bytes:
    """Noise-floor stereo with a caller burst at 1-2 s and the agent's answer at 2.4-3.4 s."""
    rng = np.random.default_rng(7)
    stereo = (rng.normal(0, 20, (5 * RATE, 2))).astype(np.int16)
    t = np.arange(RATE) / RATE
    stereo[RATE : 2 * RATE, 0] += (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    stereo[int(2.4 * RATE) : int(3.4 * RATE), 1] += (np.sin(2 * np.pi * 500 * t) * 8000).astype(
        np.int16
    )
    buffer = io.BytesIO()
    sf.write(buffer, stereo, RATE, format="FLAC")
    return buffer.getvalue()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A seeded history database, named in this process's environment (for ``run_cli``) and in
    the returned one (for ``cli``, a real process)."""
    from switchboard.settings import get_settings

    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "SWITCHBOARD_RECORDINGS_URL": str(tmp_path / "rec"),
    }
    for name in ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_RECORDINGS_URL"):
        monkeypatch.setenv(name, env[name])
    get_settings.cache_clear()

    async def seed() -> None:
        store = CallStore(env["SWITCHBOARD_DATABASE_URL"], LocalRecordingStorage(tmp_path / "rec"))
        await store.open()
        now = dt.datetime.now(dt.UTC)
        ref = RecordingRef(key="x/call-CAcli.flac", sample_rate=RATE, duration_secs=5, bytes=1)
        await store.save(
            StoredCall(
                call_id="call-CAcli",
                agent="a",
                ingress="twilio",
                started_at=now,
                outcome="completed",
                from_number="+15550001",
                recording=ref,
            ),
            two_turn_recording(),
        )
        await store.save(
            StoredCall(
                call_id="call-CAold",
                agent="a",
                ingress="twilio",
                outcome="failed",
                started_at=now - dt.timedelta(days=40),
            )
        )
        await store.add_dead_letter("call-CAcli", "http://127.0.0.1:9/hook", "{}", 5, "HTTP 500")
        await store.close()

    asyncio.run(seed())
    yield env
    get_settings.cache_clear()


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``switchboard ...`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*argv: str) -> Ran:
    """``switchboard ...`` in this process (``cli.main``, what the entry point runs): a real
    process costs seconds of imports, so one test runs the CLI as one and the rest in here."""
    from switchboard.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return Ran(code, out.getvalue(), err.getvalue())


def test_records_lists_fetches_deletes_and_purges(env: dict[str, str], tmp_path: Path) -> None:
    listed = cli(env, "records", "list")
    assert listed.returncode == 0, listed.stderr
    assert (
        "call-CAcli" in listed.stdout
        and "call-CAold" in listed.stdout
        and "2 of 2" in listed.stdout
    )
    assert "call-CAold" not in run_cli("records", "list", "--outcome", "completed").stdout

    out = tmp_path / "fetched.flac"
    assert run_cli("records", "fetch", "call-CAcli", "-o", str(out)).returncode == 0
    assert sf.info(str(out)).channels == 2

    letters = run_cli("records", "dead-letters")
    assert "call-CAcli" in letters.stdout and "HTTP 500" in letters.stdout

    purged = run_cli("records", "purge", "--days", "30")
    assert "deleted 1 call(s)" in purged.stdout
    assert run_cli("records", "delete", "call-CAcli").returncode == 0
    assert not (tmp_path / "rec" / "x" / "call-CAcli.flac").exists()
    assert run_cli("records", "delete", "call-CAcli").returncode == 1
    assert "0 of 0" in run_cli("records", "list").stdout
    assert run_cli("records", "dead-letters").stdout == ""


def test_analyze_takes_a_stored_call_id(env: dict[str, str]) -> None:
    result = run_cli("analyze", "call-CAcli", "--detector", "energy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("call-CAcli: 5.0 s at 16000 Hz"), result.stdout
    assert "reply gap: n=1 p50 400 ms" in result.stdout, result.stdout
    missing = run_cli("analyze", "call-CAnone")
    assert missing.returncode == 2 and "no stored recording of call call-CAnone" in missing.stderr
