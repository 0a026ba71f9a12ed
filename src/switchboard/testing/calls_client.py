"""Reading call records and recordings from an orchestrator's ``/calls`` API, with the operator key."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from switchboard.call_ids import call_id_for_twilio
from switchboard.errors import SwitchboardError

# Records are written in the background once a call has ended, and an agent that redacts its
# recordings re-transcribes each first, one call at a time per worker (records/redaction.py):
# when calls end faster than that, a busy worker's records queue behind each other for tens of
# seconds (a replay against a 4-slot pool at a load of 7-9 waited past 20 s).
RECORD_WAIT_S = 120.0


class CallsAPIError(SwitchboardError):
    """The calls API refused or failed a request; the message says which and why."""


class CallsClient:
    """``GET /calls``, ``/calls/{id}`` and ``/calls/{id}/recording`` of one server."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 15.0):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout_s, headers={"X-API-Key": api_key} if api_key else {})

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, **params: Any) -> httpx.Response:
        for attempt in (1, 2):  # once more after a dropped keep-alive connection
            try:
                response = await self._client.get(self.base_url + path, params=params or None)
                break
            except httpx.RemoteProtocolError:
                if attempt == 2:
                    raise CallsAPIError(f"{self.base_url}{path}: the server closed the connection twice") from None
            except httpx.HTTPError as e:
                raise CallsAPIError(f"{self.base_url}{path}: {type(e).__name__}: {e}") from e
        if response.status_code in (401, 403):
            raise CallsAPIError(
                f"{self.base_url}: the operator key was refused (give --api-key or SWITCHBOARD_API_KEY)"
            )
        return response

    async def record(self, call_id: str) -> dict[str, Any] | None:
        """The stored record of a call (None: no such call)."""
        response = await self._get(f"/calls/{call_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CallsAPIError(f"GET /calls/{call_id}: {response.status_code} {response.text[:200]}")
        return response.json()

    async def finished_record(self, call_sid: str, wait_s: float = RECORD_WAIT_S) -> dict[str, Any]:
        """The stored record of a call that just ended, waiting for it to be written.

        An orchestrator answers with the live state until the record is stored (it has a
        ``transcript`` then); a standalone ``serve`` keeps no store and answers with its
        in-memory view (no transcript), which is returned once the call has ended there. A live
        state is never returned as the record: past ``wait_s`` that is an error saying so.
        """
        deadline = time.monotonic() + wait_s
        last: dict[str, Any] | None = None
        while True:
            last = await self.record(call_id_for_twilio(call_sid)) or await self.record(call_sid) or last
            if last is not None and "transcript" in last:
                return last
            if last is not None and "marks_played" in last and last.get("ended_at"):
                return last  # a worker's own view (``serve``): no store behind it to wait for
            if time.monotonic() > deadline:
                if last is None:
                    raise CallsAPIError(f"no record of call {call_sid} at {self.base_url} after {wait_s:.0f} s")
                raise CallsAPIError(
                    f"the record of call {call_sid} was not saved at {self.base_url} within {wait_s:g} s "
                    f"(its live state: {last.get('status') or 'unknown'})"
                )
            await asyncio.sleep(0.25)

    async def recording(self, call_id: str) -> bytes | None:
        response = await self._get(f"/calls/{call_id}/recording")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CallsAPIError(f"GET /calls/{call_id}/recording: {response.status_code}")
        return response.content

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` calls of the history (summaries), newest first."""
        response = await self._get("/calls", limit=limit)
        if response.status_code != 200:
            raise CallsAPIError(f"GET /calls: {response.status_code} {response.text[:200]}")
        body = response.json()
        if isinstance(body, list):
            raise CallsAPIError(f"{self.base_url} keeps no call history (a standalone agent): use an orchestrator")
        return body["calls"]
