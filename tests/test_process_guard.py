"""The no-process-left-behind check finds what a test started, even once re-parented, and kills it."""

import os
import subprocess
import sys
import time

import process_guard
from conftest import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_child_left_running_is_found_named_and_killed() -> None:
    child = subprocess.Popen(SLEEPER)
    try:
        left = wait_for(lambda: [p for p in process_guard.leftovers() if p.pid == child.pid], what="the child seen")
        assert "time.sleep(60)" in left[0].command
        process_guard.kill(left)
        assert child.wait(timeout=10) != 0
        assert child.pid not in {p.pid for p in process_guard.leftovers()}
    finally:
        child.kill()
        child.wait()


def test_a_daemonized_grandchild_is_found_by_the_session_mark() -> None:
    # The shell exits at once; its setsid'd child is re-parented away from pytest.
    subprocess.run(["bash", "-c", f"setsid {sys.executable} -c 'import time; time.sleep(60)' >/dev/null 2>&1 &"], check=True)
    orphans = wait_for(
        lambda: [p for p in process_guard.leftovers() if "time.sleep(60)" in p.command], what="the orphan seen"
    )
    assert [p.ppid != os.getpid() for p in orphans] == [True]
    process_guard.kill(orphans)
    time.sleep(0.2)
    assert not [p for p in process_guard.leftovers() if "time.sleep(60)" in p.command]


def test_a_process_a_session_fixture_owns_is_not_a_leak_until_released() -> None:
    child = subprocess.Popen(SLEEPER)
    try:
        process_guard.own_for_session(child.pid)
        assert child.pid not in {p.pid for p in process_guard.leftovers()}
        assert child.pid in {p.pid for p in process_guard.leftovers(include_session_owned=True)}
        process_guard.release(child.pid)
        assert child.pid in {p.pid for p in process_guard.leftovers()}
    finally:
        process_guard.release(child.pid)
        child.kill()
        child.wait()
