"""The one path every call takes, whatever brought it: run, record, count, release.

:func:`run_call` builds the agent's pipeline around the adapter's transport, logs the call
(:mod:`switchboard.call_log`), counts it in the call metrics, saves its record, tells the
``on_ended`` hooks and frees its worker slot. Admission (which agent, which session, the
ledger) happens before, once for every ingress, in :class:`switchboard.call.host.CallHost`.
A call whose peer never connected (``adapter.succeeded()`` is false: a browser's dead offer) is
no call: its outcome is ``abandoned``, and it is neither stored nor counted in ``calls_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from loguru import logger
from pipecat.workers.runner import WorkerRunner

from switchboard.call.context import CallContext
from switchboard.call.conversation.call_control import FOLLOW_UP_LIMIT_SECS, CallController
from switchboard.call.conversation.pipeline import CallPipeline, build_call_pipeline
from switchboard.call.record import CallRecord
from switchboard.call.session_keeper import SessionKeeper
from switchboard.call_log import EndedBy, HangUp, Resumed, logging_to
from switchboard.dispatch.sessions import CallSession
from switchboard.observability import metrics
from switchboard.records.archive import attach_capture, save_call

AGENT_ENDINGS = ("agent", "idle", "max_duration")  # the agent hung up: the carrier must know
ABANDONED = "abandoned"  # the outcome of a call whose peer never connected


async def run_call(ctx: CallContext) -> CallRecord:
    """Run one call to its end (either side hanging up, or its time limit) and record it.

    With ``ctx.sessions`` the conversation is kept in Redis as it goes, so another worker can
    carry the call on; ``ctx.resumed`` is the session of a call doing that, which ``ctx.opening``
    (by default the agent's ``resumed`` line) starts instead of the greeting.
    """
    with logging_to(ctx.log):
        await _run(ctx)
    return ctx.record


async def _run(ctx: CallContext) -> None:
    adapter, agent, record, log = ctx.adapter, ctx.agent, ctx.record, ctx.log
    call = controller = capture = keeper = None
    ended_by: EndedBy | None = None
    # A hard stop behind the agent's own time limit (which says goodbye first).
    hard_limit = agent.limits.max_duration_secs + FOLLOW_UP_LIMIT_SECS + 10
    metrics.ACTIVE_CALLS.inc()
    try:
        call = build_call_pipeline(
            adapter.transport(),
            agent,
            ctx.settings,
            out_sample_rate=adapter.out_sample_rate,
            before_output=adapter.before_output(),
            history=ctx.resumed.history if ctx.resumed else (),
            opening=ctx.opening or (agent.resumed if ctx.resumed else None),
            log=log,
        )
        capture = attach_capture(
            ctx.archive, call.worker, ingress=adapter.ingress, agent=agent,
            params={"From": ctx.ids.caller, "To": ctx.ids.dialed}, log=log,
        )
        if call.stage is not None and capture is not None and capture.recorder is not None:
            call.stage.on_caller_audio(capture.hear_caller)  # the caller's channel
        controller = _controller(ctx, call)
        if ctx.resumed is not None:
            logger.info(f"call {record.call_sid}: carried on from another worker ({len(ctx.resumed.history)} messages)")
            log.carry_on(ctx.resumed.events)
            log.add(Resumed())
        keeper = await _keep_session(ctx, call)
        adapter.attach(call)
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        await runner.add_workers(call.worker)
        controller.start()
        async with asyncio.timeout(hard_limit):
            await runner.run()
        record.outcome = "completed" if adapter.succeeded() else ABANDONED
    except asyncio.CancelledError:
        record.outcome = "failed"
        ended_by = "worker"  # a shutdown, or a drain out of time handing the call on
        raise
    except Exception as e:
        record.outcome = "failed"
        record.failure_reason = f"{type(e).__name__}: {e}"
        ended_by = "error"
        metrics.PIPELINE_ERRORS.labels(stage="call").inc()
        logger.exception(f"call {record.call_sid}: {adapter.ingress} call failed")
    finally:
        metrics.ACTIVE_CALLS.dec()
        record.ended_at = time.time()
        if record.outcome != ABANDONED:
            metrics.CALLS_TOTAL.labels(outcome=record.outcome).inc()
            metrics.CALL_DURATION_SECONDS.labels(outcome=record.outcome).observe(
                record.ended_at - record.started_at
            )
        record.marks_played = adapter.marks_played()
        if keeper is not None:
            await _quietly(keeper.stop(), record, "stopping the session keeper")
        if controller is not None:
            await _quietly(controller.stop(), record, "stopping call control")
            ended_by = controller.ended_by or ended_by  # type: ignore[assignment]
        log.add(HangUp(ended_by=ended_by or ("error" if record.outcome == "failed" else "caller")))
        await _end(ctx, capture)


def _controller(ctx: CallContext, call: CallPipeline) -> CallController:
    secret = ctx.settings.tool_signing_secret
    controller = CallController(
        call.worker,
        ctx.agent,
        ctx.adapter.control,
        call_id=ctx.ids.call_id or ctx.ids.call_sid,
        tool_secret=secret.get_secret_value() if secret else None,
        log=ctx.log,
    )
    call.worker.add_observer(controller)
    return controller


async def _keep_session(ctx: CallContext, call: CallPipeline) -> SessionKeeper | None:
    """In a pool, keep the call's session in Redis as it goes (None standalone)."""
    if ctx.sessions is None:
        return None
    ids = ctx.ids
    session = ctx.resumed or CallSession(call_id=ids.call_id or ids.call_sid, agent=ctx.agent.name)
    keeper = SessionKeeper(
        ctx.sessions, session, call.context, ctx.worker_id, events=ctx.log.control_events
    )
    call.worker.add_observer(keeper)
    await keeper.start()
    return keeper


async def _end(ctx: CallContext, capture) -> None:
    """After the pipeline: hang up if the agent ended it, close, save, tell the hooks, release."""
    record, adapter = ctx.record, ctx.adapter
    if record.ended_by in AGENT_ENDINGS:
        await _quietly(adapter.control.hang_up(), record, "hanging up")
    await _quietly(adapter.close(), record, "closing the transport")
    logger.info(f"call {record.call_sid}: {record.outcome}, intents {record.intents}")
    if record.outcome != ABANDONED:
        # The call's record goes to the archive (history, recording, webhook) in the background.
        await _quietly(save_call(ctx.archive, record, capture), record, "saving the call record")
        for hook in ctx.on_ended:
            await _quietly(
                hook(record), record, f"call-ended hook {getattr(hook, '__name__', hook)}"
            )
    if ctx.slot is not None:
        await _quietly(ctx.slot.release(record), record, "releasing the slot")


async def _quietly(work: Awaitable[None], record: CallRecord, what: str) -> None:
    """After a call, one failing step must not skip the others (nor hide the call's outcome)."""
    try:
        await work
    except Exception:
        metrics.PIPELINE_ERRORS.labels(stage="call_end").inc()
        logger.exception(f"call {record.call_sid}: {what} failed")
