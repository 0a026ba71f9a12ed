"""Twilio REST emulator: the ``Calls`` resource (create, update with TwiML) and dial callbacks.

Enough of ``/2010-04-01/Accounts/{AccountSid}/Calls`` for the real ``twilio`` SDK, pointed at
it with ``client.api.base_url``, to redirect and hang up calls and to place them. It checks HTTP
Basic auth (account SID and auth token), keeps every request it got (``GET /stats``, and the
calls' state at ``GET /emulator/calls/{sid}``), and acts out what Twilio would do next:

* an update whose TwiML holds ``<Dial action=...>`` "dials" the target and posts the result to
  the action URL (``DialCallStatus``: ``completed`` for answered, or ``busy`` / ``no-answer`` /
  ``failed`` as configured per target), signed with ``X-Twilio-Signature`` like Twilio does, and
  keeps the TwiML it answered (a caller simulator follows the call there);
* ``Status=completed`` hangs the call up;
* a created call posts ``StatusCallback`` events (``initiated``, then ``ringing``/``answered``
  and ``completed`` per the target's outcome) when a callback URL is given.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from loguru import logger
from twilio.request_validator import RequestValidator

from switchboard.emulators.stats import EmulatorStats

DIAL_STATUSES = ("completed", "busy", "no-answer", "failed")
_CALLBACK_TIMEOUT_SECS = 5.0


@dataclass
class EmulatedCall:
    """One call as the emulator knows it."""

    sid: str
    account_sid: str
    status: str = "in-progress"
    to: str = ""
    from_: str = ""
    twiml: list[str] = field(default_factory=list)  # every TwiML document the call was given
    dialed: list[dict[str, Any]] = field(default_factory=list)  # target, outcome, callback status

    def as_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "status": self.status,
            "to": self.to,
            "from": self.from_,
            "twiml": self.twiml,
            "dialed": self.dialed,
        }


def dial_targets(twiml: str) -> tuple[list[str], str | None]:
    """The numbers and SIP URIs a ``<Dial>`` rings, and its action URL."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        return [], None
    dial = root.find("Dial")
    if dial is None:
        return [], None
    targets = [(n.text or "").strip() for n in dial if n.tag in ("Number", "Sip")]
    if dial.text and dial.text.strip():
        targets.append(dial.text.strip())
    return targets, dial.get("action")


def create_app(
    account_sid: str, auth_token: str, dial_outcomes: dict[str, str] | None = None
) -> FastAPI:
    """The emulator's ASGI app; ``dial_outcomes`` maps a target to its ``DialCallStatus``."""
    outcomes = dict(dial_outcomes or {})
    bad = {k: v for k, v in outcomes.items() if v not in DIAL_STATUSES}
    if bad:
        raise ValueError(f"dial outcomes must be one of {DIAL_STATUSES}: {bad}")
    app = FastAPI(title="Twilio REST emulator")
    stats = EmulatorStats()
    calls: dict[str, EmulatedCall] = {}
    callbacks: set[asyncio.Task] = set()
    signer = RequestValidator(auth_token)
    expected_auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()

    def refused(request: Request, account: str) -> JSONResponse | None:
        if request.headers.get("authorization") != expected_auth or account != account_sid:
            return JSONResponse(
                {"code": 20003, "message": "Authenticate", "status": 401}, status_code=401
            )
        return None

    async def post_signed(url: str, params: dict[str, str]) -> httpx.Response | None:
        headers = {"X-Twilio-Signature": signer.compute_signature(url, params)}
        try:
            async with httpx.AsyncClient(timeout=_CALLBACK_TIMEOUT_SECS) as client:
                return await client.post(url, data=params, headers=headers)
        except httpx.HTTPError as e:
            logger.warning(f"twilio emulator: callback {url} failed: {e!r}")
            return None

    def later(work) -> None:
        task = asyncio.create_task(work)
        callbacks.add(task)
        task.add_done_callback(callbacks.discard)

    async def dial(call: EmulatedCall, targets: list[str], action: str | None) -> None:
        target = targets[0] if targets else ""
        status = outcomes.get(target, "completed")
        entry: dict[str, Any] = {"target": target, "outcome": status, "action": action}
        call.dialed.append(entry)
        if action:
            answer = await post_signed(
                action,
                {
                    "AccountSid": call.account_sid,
                    "CallSid": call.sid,
                    "DialCallStatus": status,
                    "DialCallDuration": "1" if status == "completed" else "0",
                    "DialCallSid": "CA" + secrets.token_hex(16),
                },
            )
            # What Twilio would do next with the call (a caller simulator following it reads it).
            entry["answer"] = answer.text if answer is not None else None
            entry["callback_status"] = answer.status_code if answer is not None else None

    async def call_progress(call: EmulatedCall, callback: str) -> None:
        status = outcomes.get(call.to, "completed")
        steps = ["initiated", "ringing"]
        steps += ["answered", "completed"] if status == "completed" else [status]
        for step in steps:
            call.status = "in-progress" if step == "answered" else step
            await post_signed(
                callback,
                {
                    "AccountSid": call.account_sid,
                    "CallSid": call.sid,
                    "CallStatus": call.status,
                    "To": call.to,
                    "From": call.from_,
                },
            )

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "provider": "twilio"}

    @app.get("/stats")
    async def get_stats() -> dict:
        return stats.as_dict()

    @app.get("/emulator/calls/{sid}")
    async def get_call(sid: str):
        call = calls.get(sid)
        if call is None:
            return JSONResponse({"detail": f"no call {sid}"}, status_code=404)
        return call.as_dict()

    @app.post("/2010-04-01/Accounts/{account}/Calls.json")
    async def create_call(account: str, request: Request):
        if (denied := refused(request, account)) is not None:
            return denied
        form = {k: str(v) for k, v in (await request.form()).items()}
        stats.connections += 1
        stats.items.append({"op": "create", **form})
        missing = [k for k in ("To", "From") if not form.get(k)]
        if missing or not (form.get("Url") or form.get("Twiml")):
            missing += [] if form.get("Url") or form.get("Twiml") else ["Url or Twiml"]
            return JSONResponse(
                {
                    "code": 21201,
                    "message": f"Missing parameter: {', '.join(missing)}",
                    "status": 400,
                },
                status_code=400,
            )
        call = EmulatedCall(
            "CA" + secrets.token_hex(16), account, "queued", form["To"], form["From"]
        )
        if form.get("Twiml"):
            call.twiml.append(form["Twiml"])
        calls[call.sid] = call
        if form.get("StatusCallback"):
            later(call_progress(call, form["StatusCallback"]))
        return _call_json(call, status_code=201)

    @app.post("/2010-04-01/Accounts/{account}/Calls/{sid}.json")
    async def update_call(account: str, sid: str, request: Request):
        if (denied := refused(request, account)) is not None:
            return denied
        form = {k: str(v) for k, v in (await request.form()).items()}
        stats.connections += 1
        stats.items.append({"op": "update", "sid": sid, **form})
        call = calls.get(sid)
        if call is None:  # calls reach us by Twilio's webhook, not by create: adopt them
            call = calls[sid] = EmulatedCall(sid, account)
        if call.status == "completed":
            return JSONResponse(
                {
                    "code": 21220,
                    "message": "Call is not in-progress. Cannot redirect.",
                    "status": 400,
                },
                status_code=400,
            )
        if form.get("Status") == "completed":
            call.status = "completed"
        elif form.get("Twiml"):
            call.twiml.append(form["Twiml"])
            targets, action = dial_targets(form["Twiml"])
            if targets:
                later(dial(call, targets, action))
        else:
            return JSONResponse(
                {
                    "code": 21201,
                    "message": "Missing parameter: Twiml, Url or Status",
                    "status": 400,
                },
                status_code=400,
            )
        return _call_json(call)

    return app


def _call_json(call: EmulatedCall, status_code: int = 200) -> JSONResponse:
    now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    return JSONResponse(
        {
            "sid": call.sid,
            "account_sid": call.account_sid,
            "status": call.status,
            "to": call.to,
            "from": call.from_,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "uri": f"/2010-04-01/Accounts/{call.account_sid}/Calls/{call.sid}.json",
        },
        status_code=status_code,
    )
