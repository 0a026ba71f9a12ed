"""How `make test` shares the suite between its pytest-xdist workers: whole modules, the longest
first, and the timed modules with nothing that makes calls beside them.

Three kinds of module:
- **call** modules start servers and play calls: any number run side by side;
- **timed** modules (TIMED_MODULES) read latencies to the millisecond: one at a time, with no
  call module beside them (a readers-writer file lock between the workers, ``module_turn``);
- **quiet** modules (QUIET_MODULES) test logic in-process in milliseconds: they run beside
  anything, so a worker has them to do while the other plays a timed module alone.

The scheduler (``ModuleScheduling``, chosen by conftest's ``pytest_xdist_make_scheduler``) hands
out call modules longest first; once none is left it gives a worker a quiet module while the
other still plays a call or timed module, and a timed one otherwise. The lock keeps the rule
whatever the order (a worker is handed its next module before it ends the current one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

# The modules that take longest (measured with --durations=0 on the 2-core machine), longest
# first: each is handed to a worker whole (its module-scoped servers start once) and early, so
# that the run does not end with one worker playing a long module's calls while the other waits.
SLOWEST_MODULES = (
    "test_agent_suites", "test_cloud_engines", "test_llm_call_tools", "test_livekit_sip", "test_call_control",
    "test_media_stage_calls",
    "test_worker_failures", "test_call_resume", "test_up_security", "test_worker_shutdown", "test_records_calls",
    "test_media_edge", "test_agent_calls", "test_admission_calls", "test_calls_page", "test_pool_call_control",
    "test_browser_placement", "test_rate_limits", "test_prometheus_integration", "test_pii_call",
    "test_simulated_callers",
    "test_caller_simulator", "test_dispatch", "test_loadtest", "test_webrtc_slots", "test_operator_auth",
    "test_stream_tokens", "test_dtmf_tones", "test_noise_filter", "test_twilio_webhook", "test_emulators",
    "test_browser_phone", "test_outbound", "test_twilio_rest", "test_records_analysis", "test_records_recording",
    "test_provider_connections", "test_pii_detection", "test_call_pipeline",
    # timed
    "test_instruments", "test_analyze_accuracy", "test_sip_instruments", "test_sip_load", "test_media_fuzz",
    "test_deploy", "test_records_store", "test_logging", "test_records_cli",
)  # fmt: skip

# Modules that time the system to the millisecond (instruments checked against known delays, the
# event loop's lag under fuzzing): each runs with no call module beside it, after the calls.
TIMED_MODULES = ("test_instruments", "test_sip_instruments", "test_sip_load", "test_analyze_accuracy", "test_media_fuzz")

# In-process modules (logic in milliseconds, at most a small redis-server; no model, no call in
# real time): they run beside anything. Modules running tools or servers in subprocesses beside a
# timed module made it miss its +-15 ms on a busy machine (test_deploy's validators, say).
QUIET_MODULES = (
    "test_admission", "test_placement", "test_call_controller", "test_scenario_suites", "test_analyze",
    "test_layers", "test_speech_end", "test_agent_directory", "test_call_host", "test_config",
    "test_livekit_control", "test_dashboard", "test_records_config", "test_intents", "test_livekit_local",
    "test_event_loop_tasks", "test_observers", "test_restarts", "test_send_digits", "test_spoken_lines",
    "test_audio", "test_private_files", "test_call_log", "test_media_stage", "test_pii_failures",
    "test_records_webhooks", "test_simulated_caller_logic", "test_livekit_webhook_replay", "test_livekit_outbound",
    "test_agent_config_limits", "test_service_pair", "test_call_ids",
)  # fmt: skip


# Session-scoped servers (conftest) and the modules using them: each worker starts its own, so a
# worker that has started one gets the others' modules while it has other work to hand out.
SESSION_SERVERS = {
    "shared_stack": ("test_browser_phone", "test_calls_page", "test_operator_auth", "test_ops_page"),
    "agent_server": ("test_agent_calls", "test_loadtest", "test_twilio_webhook"),
    "signed_agent": ("test_call_control", "test_noise_filter", "test_outbound", "test_pii_call", "test_twilio_webhook"),
}


def servers_of(module: str) -> set[str]:
    return {server for server, modules in SESSION_SERVERS.items() if module in modules}


def kind_of(module: str) -> str:
    if module in TIMED_MODULES:
        return "timed"
    if module in QUIET_MODULES:
        return "quiet"
    return "call"


def module_of(nodeid: str) -> str:
    """``tests/test_x.py::test_y[p]@group`` → ``test_x``."""
    return Path(nodeid.split("::", 1)[0]).stem


@contextlib.contextmanager
def module_turn(module: str, lock_dir: Path) -> Iterator[None]:
    """A readers-writer lock between the run's xdist workers: a call module holds it shared, a
    timed module exclusive (one waiting for it goes before new modules); quiet modules skip it."""
    kind = kind_of(module)
    if kind == "quiet":
        yield
        return
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "run")
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"turnstile-{run}.lock", "a") as turnstile, open(lock_dir / f"room-{run}.lock", "a") as room:
        asked = time.monotonic()
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(room, fcntl.LOCK_EX if kind == "timed" else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        waited = time.monotonic() - asked
        if waited > 1:  # what the order costs: reported in the run's log (conftest)
            with open(lock_dir / f"waits-{run}.log", "a") as log:
                log.write(f"{module} ({kind}) waited {waited:.1f} s\n")
        try:
            yield
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)


def make_scheduler(config, log):
    """pytest-xdist's scheduling by module, choosing each worker's next module by its kind."""
    from xdist.scheduler import LoadScopeScheduling

    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::", 1)[0]

        def _busy_elsewhere(self, node) -> bool:
            """Another worker still has a call or timed module to finish."""
            return any(
                kind_of(module_of(scope)) != "quiet" and not all(done.values())
                for other, work in self.assigned_work.items()
                if other is not node
                for scope, done in work.items()
            )

        def _started_elsewhere(self, node) -> set[str]:
            """The session servers other workers have started (or will, for modules handed out)."""
            return {
                server
                for other, work in self.assigned_work.items()
                if other is not node
                for scope in work
                for server in servers_of(module_of(scope))
            }

        def _next_scope(self, node) -> str:
            by_kind: dict[str, list[str]] = {"call": [], "timed": [], "quiet": []}
            for scope in sorted(self.workqueue, key=lambda scope: rank.get(module_of(scope), len(rank))):
                by_kind[kind_of(module_of(scope))].append(scope)
            if by_kind["call"]:
                elsewhere = self._started_elsewhere(node)
                return next(
                    (scope for scope in by_kind["call"] if not servers_of(module_of(scope)) & elsewhere),
                    by_kind["call"][0],
                )
            if by_kind["quiet"] and (not by_kind["timed"] or self._busy_elsewhere(node)):
                return by_kind["quiet"][0]
            return by_kind["timed"][0]

        def _assign_work_unit(self, node) -> None:
            # The parent hands out the queue's first unit.
            self.workqueue.move_to_end(self._next_scope(node), last=False)
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)
