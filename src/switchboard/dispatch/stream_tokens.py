"""Short-lived, single-use signed tokens that let one Twilio stream onto one worker.

The orchestrator reserves a slot on a worker and puts a token in the ``<Stream>``'s
``<Parameter>``s (Twilio strips query strings, and a path would put it in every proxy's
access log). The media edge reads it from ``start.customParameters``, checks it and relays the
stream to the worker it names, at ``/twilio/media/{token}`` on that worker's internal address;
the worker checks it the same way (:func:`verify`) before accepting the WebSocket.

A token names one call, one worker and one placement: each placement (``/twilio/voice``, and
``/twilio/resume`` after a lost stream) issues a fresh token id (``j``), and each hop redeems
that id once, atomically in Redis (:class:`switchboard.dispatch.redemptions.StreamRedemptions`).
A token cannot open a second stream, neither after its stream closed nor beside it. ``r`` counts
the call's resumes: only a token from ``/twilio/resume`` (``r`` > 0) lets a worker carry on the
conversation an earlier stream of the call left behind.

Format: ``base64url(json claims) . base64url(HMAC-SHA256)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass

from loguru import logger

from switchboard.addresses import is_loopback
from switchboard.call_ids import call_id_for_twilio
from switchboard.errors import ConfigError, SwitchboardError
from switchboard.settings import DEV_STREAM_SECRET

_TOKEN_ID_BYTES = 16


class StreamTokenError(SwitchboardError):
    """A stream token is malformed, forged, expired, meant for another worker or used already.

    ``reason`` is a metric label: malformed | bad_signature | expired | other_worker | other_call |
    reused.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StreamClaims:
    call_id: str
    worker_id: str
    expires_at: float
    token_id: str  # fresh per placement: what the hops redeem, once each
    resume: int = 0  # > 0: placed by /twilio/resume, may carry on the call's conversation


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def issue(
    secret: str,
    call_id: str,
    worker_id: str,
    ttl_secs: float,
    now: float | None = None,
    *,
    resume: int = 0,
) -> str:
    """A token for one stream of ``call_id`` on ``worker_id``, with a fresh token id."""
    claims = {
        "c": call_id,
        "w": worker_id,
        "e": round((now or time.time()) + ttl_secs, 3),
        "j": secrets.token_urlsafe(_TOKEN_ID_BYTES),
        "r": resume,
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def read(secret: str, token: str, now: float | None = None) -> StreamClaims:
    """Check signature and expiry (any audience); raise StreamTokenError saying which failed."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise StreamTokenError("malformed stream token", "malformed")
    # Both sides as bytes: compare_digest refuses a str with non-ASCII characters (a TypeError).
    if not hmac.compare_digest(signature.encode(), _sign(secret, payload).encode()):
        raise StreamTokenError("bad stream token signature", "bad_signature")
    try:
        claims = json.loads(_unb64(payload))
        parsed = StreamClaims(
            str(claims["c"]),
            str(claims["w"]),
            float(claims["e"]),
            str(claims["j"]),
            int(claims["r"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise StreamTokenError("unreadable stream token", "malformed") from e
    if not math.isfinite(parsed.expires_at) or parsed.expires_at < (now or time.time()):
        raise StreamTokenError("expired stream token", "expired")
    return parsed


def verify(secret: str, token: str, worker_id: str, now: float | None = None) -> StreamClaims:
    """Check signature, expiry and audience (``worker_id``); raise StreamTokenError saying which
    failed. Redeeming the token (single use) is the caller's next step."""
    parsed = read(secret, token, now)
    if parsed.worker_id != worker_id:
        raise StreamTokenError("stream token is for another worker", "other_worker")
    return parsed


def check_call(claims: StreamClaims, call_sid: str) -> None:
    """Refuse a token presented in the stream of another call: the ``callSid`` of Twilio's
    ``start`` must be the call the token was placed for (a token lifted from one call's TwiML
    cannot carry a different call onto a worker)."""
    if claims.call_id != call_id_for_twilio(call_sid):
        raise StreamTokenError("stream token is for another call", "other_call")


def check_secret(secret: str, host: str) -> None:
    """Refuse the development secret (anyone can sign tokens with it) on a server bound to a
    non-loopback address; warn about it on loopback (``make run`` without ``switchboard up``)."""
    if secret != DEV_STREAM_SECRET:
        return
    if not is_loopback(host):
        raise ConfigError(
            f"SWITCHBOARD_STREAM_SECRET is the development value, published in the source, and this "
            f"server binds {host}: anyone could sign stream tokens. Set SWITCHBOARD_STREAM_SECRET to a "
            "random value shared by the orchestrators and workers (openssl rand -hex 32)."
        )
    logger.warning(
        "SWITCHBOARD_STREAM_SECRET is the development value: stream tokens can be forged by anyone "
        "who can reach this server; set a random one (switchboard up makes one per deployment)"
    )
