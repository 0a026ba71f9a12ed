"""Batch outbound calls from a CSV: ``switchboard dial --csv``, through ``POST /calls``.

Each row is a call (``to`` required; ``agent``, ``from``, ``voicemail``, ``ingress`` optional). At most
``concurrency`` requests are in flight; a row is only placed inside the calling hours (local
time of this machine) and is otherwise reported ``outside_hours``; a refused request is retried
``retries`` times with a growing pause when the server or Twilio failed (5xx), never when the
row itself was wrong (4xx). Every row ends up in the result CSV with its outcome.

A batch paces itself to the pool's headroom (:class:`HeadroomPacer`): a row is placed only while
the orchestrator's ``/stats`` shows workers admitting calls and nobody on hold, so a campaign
waits for room instead of filling the hold queue or meeting the busy line.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from switchboard.errors import ConfigError

RESULT_FIELDS = ("row", "to", "agent", "status", "call_sid", "attempts", "error")
_FIELDS = ("to", "agent", "from", "voicemail", "ingress")
# A LiveKit call's request returns once the callee answers, so it outlasts the ringing.
REQUEST_TIMEOUT_SECS = 90.0


@dataclass
class RowResult:
    row: int
    to: str
    agent: str
    status: str = "pending"  # placed | failed | outside_hours
    call_sid: str = ""
    attempts: int = 0
    error: str = ""


class HeadroomPacer:
    """Lets a batch place calls only as fast as the pool admits them.

    Each read of ``GET /stats`` gives a budget (``admission.admits_now``, or none while callers
    hold) spent one call at a time and read again after ``poll_secs``; while it is empty the
    pacer waits. A server without admission figures (a standalone agent, an older orchestrator,
    or one that cannot be reached) is not paced: the placement itself then reports the problem.
    Calls still ringing are not in the figures, so a few may overshoot; they get their agent's
    overflow answer.
    """

    def __init__(
        self, client: httpx.AsyncClient, url: str, api_key: str, *, poll_secs: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._url = f"{url.rstrip('/')}/stats"
        self._headers = {"X-API-Key": api_key}
        self._poll_secs = poll_secs
        self._clock = clock
        self._budget = 0
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self.waits = 0  # reads that found no room

    async def admit(self) -> None:
        """Return once the pool has room for one more call (or says nothing about room)."""
        async with self._lock:
            while True:
                if self._budget > 0 and self._clock() - self._read_at < self._poll_secs:
                    self._budget -= 1
                    return
                room = await self._room()
                if room is None:
                    return
                self._budget, self._read_at = room, self._clock()
                if room <= 0:
                    self.waits += 1
                    await asyncio.sleep(self._poll_secs)

    async def _room(self) -> int | None:
        try:
            response = await self._client.get(self._url, headers=self._headers)
            admission = response.json()["admission"] if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(admission, dict):
            return None
        return 0 if admission.get("hold_queue_length", 0) else int(admission.get("admits_now", 0))


def calling_hours(spec: str) -> tuple[datetime.time, datetime.time]:
    """``"09:00-18:00"`` as start and end times."""
    try:
        start, end = (datetime.time.fromisoformat(p.strip()) for p in spec.split("-", 1))
    except ValueError as e:
        raise ConfigError(f"--hours {spec!r}: expected HH:MM-HH:MM") from e
    return start, end


def read_rows(path: Path) -> list[dict[str, str]]:
    """The CSV's rows; the file must have a ``to`` column."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "to" not in (reader.fieldnames or []):
                raise ConfigError(
                    f"{path}: needs a 'to' column (and may have {', '.join(_FIELDS[1:])})"
                )
            return [
                {k: (v or "").strip() for k, v in row.items() if k in _FIELDS} for row in reader
            ]
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found") from e


async def dial_batch(
    url: str,
    api_key: str,
    rows: list[dict[str, str]],
    *,
    concurrency: int = 2,
    retries: int = 2,
    hours: tuple[datetime.time, datetime.time] | None = None,
    retry_pause_secs: float = 1.0,
    pace: bool = True,
    now: Callable[[], datetime.time] = lambda: datetime.datetime.now().time(),
    progress: Callable[[RowResult], None] = lambda _r: None,
) -> list[RowResult]:
    """Place every row's call; returns one result per row, in the CSV's order. ``pace``: wait for
    the pool's headroom before each call (:class:`HeadroomPacer`)."""
    gate = asyncio.Semaphore(max(1, concurrency))
    results = [RowResult(i + 1, r.get("to", ""), r.get("agent", "")) for i, r in enumerate(rows)]
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECS) as client:
        pacer = HeadroomPacer(client, url, api_key) if pace else None

        async def place(row: dict[str, str], result: RowResult) -> None:
            async with gate:
                if hours is not None and not hours[0] <= now() < hours[1]:
                    result.status = "outside_hours"
                else:
                    if pacer is not None:
                        await pacer.admit()
                    await _place(client, url, api_key, row, result, retries, retry_pause_secs)
            progress(result)

        await asyncio.gather(*(place(r, res) for r, res in zip(rows, results, strict=True)))
    return results


async def _place(
    client: httpx.AsyncClient,
    url: str,
    api_key: str,
    row: dict[str, str],
    result: RowResult,
    retries: int,
    pause: float,
) -> None:
    body = {k: v for k, v in row.items() if v}
    for attempt in range(retries + 1):
        result.attempts = attempt + 1
        try:
            response = await client.post(
                f"{url.rstrip('/')}/calls", json=body, headers={"X-API-Key": api_key}
            )
        except httpx.HTTPError as e:
            result.status, result.error = "failed", f"unreachable: {type(e).__name__}"
        else:
            if response.status_code == 201:
                result.status, result.call_sid, result.error = (
                    "placed",
                    response.json()["call_sid"],
                    "",
                )
                return
            result.status, result.error = "failed", f"{response.status_code} {response.text[:200]}"
            if response.status_code < 500:
                return  # the row is wrong; asking again will not help
        if attempt < retries:
            await asyncio.sleep(pause * (attempt + 1))


def write_results(path: Path, results: list[RowResult]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        writer.writeheader()
        for r in results:
            writer.writerow({k: getattr(r, k) for k in RESULT_FIELDS})
