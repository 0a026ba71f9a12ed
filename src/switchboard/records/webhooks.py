"""The post-call webhook: the record POSTed to the agent's URL, signed, retried, dead-lettered.

The signature header is ``X-Switchboard-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 of ``"<t>.<body>"`` under the agent's webhook secret (the scheme Stripe uses): a
receiver recomputes it with ``verify_signature`` and refuses stale timestamps, so a captured
request cannot be replayed later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import httpx
from loguru import logger

from switchboard.observability import metrics
from switchboard.records.store import CallStore

SIGNATURE_HEADER = "X-Switchboard-Signature"
DEFAULT_TOLERANCE_SECS = 300


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value for ``body`` at ``timestamp`` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    secret: str, header: str | None, body: bytes, *, tolerance_secs: float = DEFAULT_TOLERANCE_SECS
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is recent enough."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance_secs:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookSender:
    """Delivers post-call webhooks with exponential backoff; what never arrives is dead-lettered."""

    def __init__(
        self, store: CallStore, *, max_attempts: int, backoff_secs: float, timeout_secs: float
    ):
        self._store = store
        self.max_attempts = max_attempts
        self.backoff_secs = backoff_secs
        self._client = httpx.AsyncClient(timeout=timeout_secs, follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def _attempts(
        self, url: str, secret: str, call_id: str, body: bytes, tries: int
    ) -> str | None:
        """Try up to ``tries`` times; None on success, else the last error."""
        error = "not attempted"
        for attempt in range(1, tries + 1):
            try:
                response = await self._client.post(
                    url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign(secret, body),
                    },
                )
                if response.is_success:
                    metrics.CALL_WEBHOOKS.labels(result="delivered").inc()
                    logger.info(f"{call_id}: post-call webhook delivered (attempt {attempt})")
                    return None
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            metrics.CALL_WEBHOOKS.labels(result="failed").inc()
            logger.warning(
                f"{call_id}: post-call webhook attempt {attempt}/{tries} failed: {error}"
            )
            if attempt < tries:
                await asyncio.sleep(self.backoff_secs * 2 ** (attempt - 1))
        return error

    async def deliver(self, url: str, secret: str, call_id: str, payload: str) -> bool:
        """Deliver one call's webhook; False if it went to the dead-letter list.

        Cancelled (the worker is shutting down), it is dead-lettered too, so it can be replayed.
        """
        try:
            error = await self._attempts(url, secret, call_id, payload.encode(), self.max_attempts)
        except asyncio.CancelledError:
            await self._store.add_dead_letter(
                call_id, url, payload, 0, "cancelled: the worker shut down"
            )
            metrics.CALL_WEBHOOKS.labels(result="dead_lettered").inc()
            logger.warning(
                f"{call_id}: post-call webhook interrupted by shutdown, dead-lettered for replay"
            )
            raise
        if error is None:
            return True
        await self._store.add_dead_letter(call_id, url, payload, self.max_attempts, error)
        metrics.CALL_WEBHOOKS.labels(result="dead_lettered").inc()
        logger.error(
            f"{call_id}: post-call webhook dead-lettered after {self.max_attempts} attempts: {error}"
        )
        return False

    async def replay(self, letter_id: int, secret: str) -> bool | None:
        """Send a dead letter again, once (same body, fresh signature); None if there is no such
        letter. On success the letter is removed; on failure it stays, and is not duplicated.
        """
        found = await self._store.dead_letter_payload(letter_id)
        if found is None:
            return None
        letter, payload = found
        error = await self._attempts(letter.url, secret, letter.call_id, payload.encode(), 1)
        if error is not None:
            return False
        await self._store.remove_dead_letter(letter_id)
        return True
