"""``CallArchive``: a worker's call records, written after each call without holding it up.

The worker hands each finished call to ``save_call``; encoding the recording, writing the row
and delivering the post-call webhook run as background tasks the archive owns, awaited (up to
the drain deadline) and then cancelled when the worker stops. Retention runs here too.

The stored record is a view of the call's log (``switchboard.call_log``). What the log learns
after the call was saved (a cold transfer's result, reported by the carrier when the dial ends)
is written to the stored record by ``amend`` and sent as a ``call.updated`` webhook.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from typing import Protocol

from loguru import logger
from pipecat.pipeline.worker import PipelineWorker

from switchboard.agent.config import AgentConfig
from switchboard.call_ids import call_id_for_twilio
from switchboard.call_log import CallLog, LogEvent, Resumed
from switchboard.observability import metrics
from switchboard.records.analysis import analyse_call
from switchboard.records.capture import CallCapture
from switchboard.records.models import RecordingRef, StoredCall
from switchboard.records.recording import RECORDING_RATE
from switchboard.records.redaction import redact_for_storage
from switchboard.records.storage import recording_storage
from switchboard.records.store import CallStore
from switchboard.records.webhooks import WebhookSender
from switchboard.settings import Settings

# Calls have already drained when the archive stops: this bounds the extra wait for their
# records and webhooks, so a dead webhook receiver cannot hold a shutdown past its grace period.
STOP_WAIT_SECS = 5.0
# Saved calls a late result (a cold transfer's) may still amend; a dial lasts minutes, and a
# call this far back has long been amended or will not be.
AMENDABLE_CALLS = 500


class FinishedCall(Protocol):
    """What a call runner knows of a call when it ends (``call.record.CallRecord``)."""

    call_id: str
    call_sid: str
    stream_sid: str
    started_at: float
    ended_at: float | None
    outcome: str
    failure_reason: str | None
    log: CallLog


def store_from_settings(settings: Settings) -> CallStore:
    storage = recording_storage(settings.recordings_url, s3_endpoint_url=settings.s3_endpoint_url)
    return CallStore(settings.database_url, storage)


def recording_key(call_id: str, started_at: dt.datetime) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in call_id)
    return f"{started_at:%Y/%m/%d}/{safe}.flac"


class CallArchive:
    """The records side of one worker process."""

    def __init__(self, settings: Settings, agent: AgentConfig, store: CallStore | None = None):
        self.settings = settings
        self.agent = agent
        self.store = store or store_from_settings(settings)
        self.webhooks = WebhookSender(
            self.store,
            max_attempts=settings.webhook_max_attempts,
            backoff_secs=settings.webhook_backoff_secs,
            timeout_secs=settings.webhook_timeout_secs,
        )
        self._tasks: set[asyncio.Task] = set()
        # call id -> (the record as saved, its agent, the task saving it), for ``amend``.
        self._saved: OrderedDict[str, tuple[StoredCall, AgentConfig, asyncio.Task]] = OrderedDict()
        self._purge: asyncio.Task | None = None
        self._opened = False

    def capture(
        self,
        *,
        ingress: str,
        from_number: str | None = None,
        to_number: str | None = None,
        agent: AgentConfig | None = None,
        log: CallLog | None = None,
    ) -> CallCapture:
        """A new call's observer, recording audio if the agent answering it records calls."""
        agent = agent or self.agent
        return CallCapture(
            agent=agent.name,
            config=agent,
            ingress=ingress,  # type: ignore[arg-type]
            record_audio=agent.recording.enabled,
            from_number=from_number,
            to_number=to_number,
            log=log,
        )

    async def _open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def start(self) -> None:
        """Migrate the schema; a database that is down now is retried by each save."""
        try:
            await self._open()
        except Exception as e:  # calls still run without their records; each save retries
            logger.error(f"records: call history database unavailable at start-up: {e}")
        if self.settings.records_retention_days is not None:
            self._purge = asyncio.create_task(
                self._purge_loop(self.settings.records_retention_days), name="records-purge"
            )

    async def stop(self, timeout_secs: float = STOP_WAIT_SECS) -> None:
        """Let pending saves and webhooks finish for a moment, then cancel them (a cancelled
        webhook is dead-lettered for replay)."""
        if self._purge is not None:
            self._purge.cancel()
        pending = set(self._tasks)
        if pending:
            limit = timeout_secs
            logger.info(f"records: waiting for {len(pending)} call record(s) and webhook(s)")
            _done, late = await asyncio.wait(pending, timeout=limit)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.webhooks.close()
        await self.store.close()

    async def flush(self) -> None:
        """Wait until everything submitted so far is saved and delivered (or dead-lettered)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    def submit(self, call: StoredCall, capture: CallCapture) -> asyncio.Task:
        task = self._own(self._archive(call, capture), f"record-{call.call_id}")
        self._saved[call.call_id] = (call, capture.config or self.agent, task)
        while len(self._saved) > AMENDABLE_CALLS:
            self._saved.popitem(last=False)
        return task

    def _own(self, work, name: str) -> asyncio.Task:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def amend(self, call_id: str, log: CallLog) -> asyncio.Task | None:
        """Add the log's newest event (a cold transfer's result, come after the call) to the
        call's saved record; None if the call has not been saved here (its save will include it)."""
        saved = self._saved.get(call_id)
        if saved is None or not log.events:
            return None
        call, agent, first = saved
        late, call.transfer = log.events[-1], log.transfer()
        return self._own(self._amend(call, late, agent, first), f"record-amend-{call_id}")

    async def _amend(
        self, call: StoredCall, late: LogEvent, agent: AgentConfig, first: asyncio.Task
    ) -> None:
        # After the first save (and its webhook); only this event and the transfer change, so a
        # record merged with another stream's meanwhile keeps the rest.
        await asyncio.gather(first, return_exceptions=True)
        try:
            await self._open()
            if not await self.store.amend(call.call_id, late, call.transfer):
                return  # never stored (its save failed or was refused): nothing to add to
            stored = await self.store.get(call.call_id)
        except Exception as e:  # the record stands as first saved
            metrics.CALL_RECORDS_SAVED.labels(result="failed").inc()
            logger.exception(f"{call.call_id}: call record not amended: {e}")
            return
        metrics.CALL_RECORDS_SAVED.labels(result="amended").inc()
        logger.info(f"{call.call_id}: call record amended")
        if agent.webhook is not None and stored is not None:
            await self.webhooks.deliver(
                str(agent.webhook.url),
                agent.webhook.secret.get_secret_value(),
                call.call_id,
                webhook_payload(stored, "call.updated"),
            )

    async def _archive(self, call: StoredCall, capture: CallCapture) -> None:
        audio = None
        agent = capture.config or self.agent
        try:
            if capture.recorder is not None and not capture.recorder.empty:
                audio, duration = await asyncio.to_thread(capture.recorder.encode)
                call.recording = RecordingRef(
                    key=recording_key(call.call_id, call.started_at),
                    sample_rate=RECORDING_RATE,
                    duration_secs=round(duration, 3),
                    bytes=len(audio),
                )
            # Before anything is stored or sent: the row, the audio, the webhook and the
            # analysis only ever see the redacted call.
            call, audio = await redact_for_storage(call, audio, agent)
            await self._open()
            result = await self.store.save(call, audio)
        except Exception as e:  # the call is over; its record failing must not touch the worker
            metrics.CALL_RECORDS_SAVED.labels(result="failed").inc()
            if audio is not None:
                metrics.CALL_RECORDINGS.labels(result="failed").inc()
            logger.exception(f"{call.call_id}: call record not saved: {e}")
            return
        metrics.CALL_RECORDS_SAVED.labels(result=result).inc()
        if result == "refused":
            logger.warning(
                f"{call.call_id}: call record of stream {call.stream_sid} refused: the call's stored "
                "record is of another stream, and this one did not carry the call on"
            )
            return
        if audio is not None:
            metrics.CALL_RECORDINGS.labels(result="saved").inc()
        logger.info(
            f"{call.call_id}: call record {result}"
            + (f" with {len(audio)} bytes of audio" if audio else "")
        )
        if result == "merged":
            # The analysis and the webhook are of the whole call, not of its last stream.
            try:
                call = await self.store.get(call.call_id) or call
            except Exception as e:  # the record stands; analysis and webhook see the last stream only
                logger.warning(f"{call.call_id}: merged call record not read back: {e}")
        # Saved first, analysed after: a slow LLM or a shutdown never costs the record itself.
        call.analysis = await analyse_call(self.settings, agent, call)
        if call.analysis is not None:
            try:
                await self.store.save_analysis(call.call_id, call.analysis)
            except Exception as e:  # the record stands; only its analysis is missing
                logger.warning(f"{call.call_id}: call analysis not saved: {e}")
        if agent.webhook is not None:
            payload = webhook_payload(call)
            await self.webhooks.deliver(
                str(agent.webhook.url),
                agent.webhook.secret.get_secret_value(),
                call.call_id,
                payload,
            )

    async def _purge_loop(self, days: int) -> None:
        while True:
            try:
                purged = await self.store.purge_older_than(days)
                if purged:
                    metrics.CALL_RECORDS_PURGED.labels(reason="retention").inc(len(purged))
                    logger.info(f"records: {len(purged)} call(s) older than {days} days deleted")
            except Exception as e:  # a database hiccup; retention retries on the next round
                logger.warning(f"records: retention purge failed: {e}")
            await asyncio.sleep(self.settings.records_purge_interval_secs)


def webhook_payload(call: StoredCall, kind: str = "call.ended") -> str:
    """The webhook body: ``{"type": "call.ended", "version": 1, "call": {...}}`` (``call.updated``
    when a saved record learnt more, such as a cold transfer's result)."""
    return '{"type":"' + kind + '","version":1,"call":' + call.model_dump_json() + "}"


def _utc(timestamp: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp is not None else None


def stored_call(record: FinishedCall, capture: CallCapture) -> StoredCall:
    """The record to keep: the call's log, and what the runner and the capture saw."""
    call_id = record.call_id or call_id_for_twilio(record.call_sid)
    log = record.log
    return StoredCall(
        call_id=call_id,
        call_sid=record.call_sid if record.call_sid and record.call_sid != call_id else None,
        stream_sid=record.stream_sid or None,
        # The runner logs "resumed" when it carried on a conversation another stream left behind.
        resumed=bool(log.of(Resumed)),
        from_number=capture.from_number,
        to_number=capture.to_number,
        agent=capture.agent,
        ingress=capture.ingress,
        started_at=_utc(record.started_at) or capture.started_at,
        ended_at=_utc(record.ended_at) or dt.datetime.now(dt.UTC),
        outcome=record.outcome,
        failure_reason=record.failure_reason,
        ended_by=log.ended_by,
        transcript=list(capture.transcript),
        turns=log.turns(),
        events=log.stored_events(),
        intents=log.intents(),
        tool_calls=log.tool_calls(),
        transfer=log.transfer(),
        provider_fallbacks=capture.provider_fallbacks(),
    )


def attach_capture(
    archive: CallArchive | None,
    worker: PipelineWorker,
    *,
    ingress: str,
    params: dict[str, str] | None = None,
    agent: AgentConfig | None = None,
    log: CallLog | None = None,
) -> CallCapture | None:
    """Watch a call's pipeline for its record (None without an archive). ``params`` are the
    ingress's call parameters (Twilio's ``From`` and ``To``); ``agent`` the one answering."""
    if archive is None:
        return None
    params = params or {}
    capture = archive.capture(
        ingress=ingress,
        from_number=params.get("From") or None,
        to_number=params.get("To") or None,
        agent=agent,
        log=log,
    )
    worker.add_observer(capture)
    return capture


async def save_call(
    archive: CallArchive | None, record: FinishedCall, capture: CallCapture | None
) -> None:
    """Hand a finished call to the archive; returns at once and never raises."""
    if archive is None or capture is None:
        return
    try:
        archive.submit(stored_call(record, capture), capture)
    except Exception as e:  # a malformed record must not fail the call that produced it
        metrics.CALL_RECORDS_SAVED.labels(result="failed").inc()
        logger.exception(f"{record.call_id or record.call_sid}: call record not saved: {e}")
