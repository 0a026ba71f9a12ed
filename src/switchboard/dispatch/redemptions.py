"""Stream tokens are single-use: each hop (the media edge, the worker) redeems a token's id once.

``StreamRedemptions.admit`` is the check both hops make: signature, expiry, audience and call
(the ``callSid`` of the stream's ``start``), then this. Both hops read ``start`` before they
redeem, so a token presented in another call's stream is refused without being spent.

Redeeming is one ``SET NX`` on ``sb:stream-token:{id}:{hop}``, kept a little longer than the
token lives, so of any number of sockets presenting one token (after its stream closed, or at
the same moment) exactly one gets through each hop.
"""

from __future__ import annotations

import time
from typing import Literal

import redis.asyncio as redis

from switchboard.dispatch import keys, stream_tokens
from switchboard.dispatch.stream_tokens import StreamClaims, StreamTokenError
from switchboard.observability import metrics

Hop = Literal["edge", "worker"]
# Past its expiry a token is refused anyway; the margin covers clocks that differ between hosts.
_KEEP_AFTER_EXPIRY_SECS = 300


class StreamRedemptions:
    """Redeems stream tokens in Redis (see module doc)."""

    def __init__(self, client: redis.Redis):
        self._redis = client

    def check(
        self,
        secret: str,
        token: str,
        hop: Hop,
        worker_id: str | None = None,
        call_sid: str | None = None,
    ) -> StreamClaims:
        """Everything but the redemption: signature and expiry, the audience where it is known
        (``worker_id``: the worker's own), the call where it is known (``call_sid`` of the
        stream's ``start``). Raises StreamTokenError, counted by reason."""
        try:
            if worker_id is None:
                claims = stream_tokens.read(secret, token)
            else:
                claims = stream_tokens.verify(secret, token, worker_id)
            if call_sid is not None:
                stream_tokens.check_call(claims, call_sid)
        except StreamTokenError as e:
            metrics.STREAM_TOKENS_REFUSED.labels(hop=hop, reason=e.reason).inc()
            raise
        return claims

    async def admit(
        self,
        secret: str,
        token: str,
        hop: Hop,
        worker_id: str | None = None,
        call_sid: str | None = None,
    ) -> StreamClaims:
        """The one check of a stream token, at the edge and on the worker alike: :meth:`check`,
        then redeemed for ``hop``. Given the stream's ``call_sid``, a token presented by another
        call is refused before it is redeemed, so the call it was placed for can still use it.
        Raises StreamTokenError (counted by reason) or redis.RedisError."""
        claims = self.check(secret, token, hop, worker_id, call_sid)
        try:
            await self.redeem(claims, hop)
        except StreamTokenError as e:
            metrics.STREAM_TOKENS_REFUSED.labels(hop=hop, reason=e.reason).inc()
            raise
        return claims

    async def redeem(self, claims: StreamClaims, hop: Hop, now: float | None = None) -> None:
        """Mark the token used on ``hop``; raise StreamTokenError (``reused``) if it was already.
        Raises redis.RedisError if Redis cannot say: the stream is then refused, not let through."""
        keep_secs = max(claims.expires_at - (now or time.time()), 0) + _KEEP_AFTER_EXPIRY_SECS
        first = await self._redis.set(
            keys.stream_token(claims.token_id, hop), claims.call_id, nx=True, ex=int(keep_secs) + 1
        )
        if not first:
            raise StreamTokenError("stream token already used", "reused")
