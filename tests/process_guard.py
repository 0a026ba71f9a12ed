"""No test leaves a process behind: every process the tests start is found and named.

The test session marks its environment (``SWITCHBOARD_TEST_SESSION``); every process it starts,
and every process those start (a supervisor's children, a daemonized server), inherits the mark,
even once re-parented to init. At the end of each test module, any marked process still running
that no session-scoped fixture owns is a leak: the module fails naming it, and it is killed.
Processes of other test sessions on the machine carry another mark and are never touched.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MARK = "SWITCHBOARD_TEST_SESSION"
# Each pytest-xdist worker is a session of its own: the two run side by side, and each must not
# take the other's servers for its leftovers.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ[MARK] = f"{os.environ.get(MARK) or uuid.uuid4().hex}-{worker}"
SESSION = os.environ.setdefault(MARK, uuid.uuid4().hex)
_MARKER = f"{MARK}={SESSION}".encode()
# Pids started by session-scoped fixtures (the shared stack, the agent server, PostgreSQL):
# alive until the session ends, by design.
_session_owned: set[int] = set()


@dataclass(frozen=True)
class Leftover:
    pid: int
    ppid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} (parent {self.ppid}): {self.command}"


def own_for_session(pid: int) -> None:
    """``pid`` (and what it starts) lives until the end of the session, on purpose."""
    _session_owned.add(pid)


def release(pid: int) -> None:
    _session_owned.discard(pid)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone, or not ours to read
        return b""


def _stat(pid: int) -> tuple[str, int] | None:
    """State letter and parent pid from /proc/<pid>/stat."""
    raw = _read(Path(f"/proc/{pid}/stat")).decode(errors="replace")
    if not raw:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    return fields[0], int(fields[1])


_RUNTIME_HELPER = "multiprocessing.resource_tracker"


def marked_processes() -> list[Leftover]:
    """Live processes of this test session other than pytest itself: those carrying its mark,
    and pytest's descendants (redis-server overwrites its environment with its title)."""
    me = os.getpid()
    processes: dict[int, tuple[int, bool]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[0] in ("Z", "X"):  # exited (a zombie is waited for elsewhere)
            continue
        marked = _MARKER in _read(entry / "environ").split(b"\0")
        processes[int(entry.name)] = (stat[1], marked)

    def descends_from_pytest(pid: int) -> bool:
        seen = set()
        while pid in processes and pid not in seen:
            seen.add(pid)
            pid = processes[pid][0]
        return pid == me

    found = []
    for pid, (ppid, marked) in processes.items():
        if marked or descends_from_pytest(pid):
            command = _read(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").decode(errors="replace")
            if ppid == me and _RUNTIME_HELPER in command:
                continue  # pytest's own multiprocessing helper: it lives as long as pytest does
            found.append(Leftover(pid, ppid, command.strip()[:300]))
    return found


def _owned(process: Leftover, by_pid: dict[int, Leftover]) -> bool:
    """Started by a session-scoped fixture, or by a process one started."""
    seen = set()
    current: Leftover | None = process
    while current is not None and current.pid not in seen:
        if current.pid in _session_owned:
            return True
        seen.add(current.pid)
        current = by_pid.get(current.ppid)
    return False


def leftovers(*, include_session_owned: bool = False) -> list[Leftover]:
    processes = marked_processes()
    by_pid = {p.pid: p for p in processes}
    return [p for p in processes if include_session_owned or not _owned(p, by_pid)]


def kill(processes: list[Leftover], grace_secs: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``grace_secs``."""
    for process in processes:
        _signal(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_secs
    pids = {p.pid for p in processes}
    while pids and time.monotonic() < deadline:
        pids = {pid for pid in pids if (stat := _stat(pid)) is not None and stat[0] not in ("Z", "X")}
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
