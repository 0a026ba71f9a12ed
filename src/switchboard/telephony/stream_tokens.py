"""Short-lived signed tokens that let one Twilio stream onto one worker.

The orchestrator reserves a slot on a worker and puts a token in the ``<Stream>``'s
``<Parameter>``s (Twilio strips query strings, and a path would put it in every proxy's
access log). The media edge reads it from ``start.customParameters``, checks it and relays the
stream to the worker it names, at ``/twilio/media/{token}`` on that worker's internal address;
the worker accepts the WebSocket only with a valid token issued for itself.
Format: ``base64url(json claims) . base64url(HMAC-SHA256)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from switchboard.errors import SwitchboardError


class StreamTokenError(SwitchboardError):
    """A stream token is malformed, forged, expired or meant for another worker."""


@dataclass(frozen=True)
class StreamClaims:
    call_id: str
    worker_id: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def issue(secret: str, call_id: str, worker_id: str, ttl_secs: float, now: float | None = None) -> str:
    claims = {"c": call_id, "w": worker_id, "e": round((now or time.time()) + ttl_secs, 3)}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def read(secret: str, token: str, now: float | None = None) -> StreamClaims:
    """Check signature and expiry (any audience); raise StreamTokenError saying which failed."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise StreamTokenError("malformed stream token")
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        raise StreamTokenError("bad stream token signature")
    try:
        claims = json.loads(_unb64(payload))
        parsed = StreamClaims(str(claims["c"]), str(claims["w"]), float(claims["e"]))
    except (ValueError, KeyError, TypeError) as e:
        raise StreamTokenError("unreadable stream token") from e
    if parsed.expires_at < (now or time.time()):
        raise StreamTokenError("expired stream token")
    return parsed


def verify(secret: str, token: str, worker_id: str, now: float | None = None) -> StreamClaims:
    """Check signature, expiry and audience (``worker_id``); raise StreamTokenError saying which failed."""
    parsed = read(secret, token, now)
    if parsed.worker_id != worker_id:
        raise StreamTokenError("stream token is for another worker")
    return parsed
