"""The one path every call takes, whatever brought it: run, record, count, release.

An ingress adapter (:mod:`switchboard.telephony`) gives the transport; :func:`run_call` builds
the agent's pipeline around it, keeps the call's :class:`CallRecord` in the process registry,
counts it in the call metrics, tells the ``on_ended`` hooks and frees its worker slot.
A call whose peer never connected (``adapter.succeeded()`` is false: a browser's dead offer) is
no call: its outcome is ``abandoned``, and it is neither stored nor counted in ``calls_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from loguru import logger
from pipecat.workers.runner import WorkerRunner

from switchboard.agent.call_control import FOLLOW_UP_LIMIT_SECS, CallController
from switchboard.agent.config import AgentConfig
from switchboard.agent.pipeline import build_call_pipeline
from switchboard.dispatch.sessions import CallSession, CallSessions
from switchboard.observability import metrics
from switchboard.records.archive import CallArchive, attach_capture, save_call
from switchboard.settings import Settings
from switchboard.telephony.base import CallAdapter
from switchboard.worker.calls import CallRecord, CallRegistry
from switchboard.worker.session_keeper import SessionKeeper

CallEndedHook = Callable[[CallRecord], Awaitable[None]]
AGENT_ENDINGS = ("agent", "idle", "max_duration")  # the agent hung up: the carrier must know
ABANDONED = "abandoned"  # the outcome of a call whose peer never connected


class CallSlot(Protocol):
    """A worker slot held for the call; released exactly once when the call ends."""

    async def release(self, record: CallRecord | None) -> None: ...


async def run_call(
    adapter: CallAdapter,
    agent: AgentConfig,
    settings: Settings,
    registry: CallRegistry,
    *,
    slot: CallSlot | None = None,
    on_ended: Sequence[CallEndedHook] = (),
    archive: CallArchive | None = None,
    sessions: CallSessions | None = None,
    worker_id: str = "",
    resumed: CallSession | None = None,
    opening: str | None = None,
) -> CallRecord:
    """Run one call to its end (either side hanging up, or its time limit) and record it.

    With ``sessions`` the conversation is kept in Redis as it goes (``worker_id`` holds it), so
    another worker can carry the call on; ``resumed`` is the session of a call doing that, which
    ``opening`` (by default the agent's ``resumed`` line) starts instead of the greeting.
    """
    ids = adapter.ids
    record = CallRecord(
        call_sid=ids.call_sid,
        stream_sid=ids.stream_sid,
        call_id=ids.call_id,
        ingress=adapter.ingress,
    )
    record.agent = agent.name
    registry.add(record)
    call = controller = capture = keeper = None
    # A hard stop behind the agent's own time limit (which says goodbye first).
    hard_limit = agent.limits.max_duration_secs + FOLLOW_UP_LIMIT_SECS + 10
    metrics.ACTIVE_CALLS.inc()
    try:
        call = build_call_pipeline(
            adapter.transport(),
            agent,
            settings,
            out_sample_rate=adapter.out_sample_rate,
            before_output=adapter.before_output(),
            history=resumed.history if resumed else (),
            opening=opening or (agent.resumed if resumed else None),
        )
        capture = attach_capture(
            archive, call.worker, ingress=adapter.ingress, agent=agent,
            params={"From": ids.caller, "To": ids.dialed},
        )
        secret = settings.tool_signing_secret
        controller = CallController(
            call.worker,
            agent,
            adapter.control,
            call_id=ids.call_id or ids.call_sid,
            tool_secret=secret.get_secret_value() if secret else None,
        )
        call.worker.add_observer(controller)
        if resumed is not None:
            logger.info(f"call {record.call_sid}: carried on from another worker ({len(resumed.history)} messages)")
            record.events = [*resumed.events, {"event": "resumed", "at": time.time()}]
        if sessions is not None:
            session = resumed or CallSession(call_id=ids.call_id or ids.call_sid, agent=agent.name)
            keeper = SessionKeeper(
                sessions, session, call.context, worker_id,
                events=lambda: record.events + controller.events,
            )
            call.worker.add_observer(keeper)
            await keeper.start()
        adapter.attach(call)
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        await runner.add_workers(call.worker)
        controller.start()
        async with asyncio.timeout(hard_limit):
            await runner.run()
        record.outcome = "completed" if adapter.succeeded() else ABANDONED
    except asyncio.CancelledError:
        record.outcome = "failed"
        raise
    except Exception as e:
        record.outcome = "failed"
        record.failure_reason = f"{type(e).__name__}: {e}"
        metrics.PIPELINE_ERRORS.labels(stage="call").inc()
        logger.exception(f"call {record.call_sid}: {adapter.ingress} call failed")
    finally:
        metrics.ACTIVE_CALLS.dec()
        record.ended_at = time.time()
        is_call = record.outcome != ABANDONED
        if is_call:
            metrics.CALLS_TOTAL.labels(outcome=record.outcome).inc()
            metrics.CALL_DURATION_SECONDS.labels(outcome=record.outcome).observe(
                record.ended_at - record.started_at
            )
        if call is not None:
            record.intents = [m.name for m in call.responder.matches]
            record.turns = call.timings.as_dicts()
        record.marks_played = adapter.marks_played()
        if keeper is not None:
            await _quietly(keeper.stop(), record, "stopping the session keeper")
        if controller is not None:
            await _quietly(controller.stop(), record, "stopping call control")
            record.events, record.transfer = record.events + controller.events, controller.transfer
            record.ended_by = controller.ended_by or (
                "caller" if record.outcome == "completed" else ""
            )
        if record.ended_by in AGENT_ENDINGS:
            await _quietly(adapter.control.hang_up(), record, "hanging up")
        await _quietly(adapter.close(), record, "closing the transport")
        logger.info(f"call {record.call_sid}: {record.outcome}, intents {record.intents}")
        if is_call:
            # The call's record goes to the archive (history, recording, webhook) in the background.
            await _quietly(save_call(archive, record, capture), record, "saving the call record")
            for hook in on_ended:
                await _quietly(
                    hook(record), record, f"call-ended hook {getattr(hook, '__name__', hook)}"
                )
        if slot is not None:
            await _quietly(slot.release(record), record, "releasing the slot")
    return record


async def _quietly(work: Awaitable[None], record: CallRecord, what: str) -> None:
    """After a call, one failing step must not skip the others (nor hide the call's outcome)."""
    try:
        await work
    except Exception:
        metrics.PIPELINE_ERRORS.labels(stage="call_end").inc()
        logger.exception(f"call {record.call_sid}: {what} failed")
