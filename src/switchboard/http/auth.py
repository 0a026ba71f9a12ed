"""Operator authentication for the orchestrator and the workers: ``require_api_key`` for
operator endpoints and pages (``/stats``, ``/metrics``, ``/dashboard``, ``/manual/...``), and
the stricter ``require_caller_data_key`` for caller data (``/calls``, recordings) and outbound
calls.

Keys are kept only as SHA-256 digests: ``SWITCHBOARD_API_KEY_HASHES`` holds digests (hex), and
the plain keys of ``SWITCHBOARD_API_KEYS`` (a comma list: two at once while rotating) and
``SWITCHBOARD_API_KEY`` are hashed when the settings are loaded. A request presents a key as
``X-API-Key: <key>``, ``Authorization: Bearer <key>`` (Prometheus) or HTTP Basic with the key as
the password (browsers: the dashboard's own ``fetch("/stats")`` then carries it); the digest of
what it presents is compared with every digest in constant time.

The key is checked before the request's body is read (``KeyFirstRoute``): a stranger's
malformed body gets 401, never a 422 that says how the body was parsed.

Without any key configured, operator endpoints answer only a direct request from a loopback
address to a server that itself listens on loopback (``make run``): a request that came
through a proxy (``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``) or a server bound to a
public address is refused with 403 until a key is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.routing import APIRoute
from loguru import logger

from switchboard.addresses import is_loopback
from switchboard.settings import Settings

_REALM = 'Basic realm="Switchboard operator", charset="UTF-8"'
_PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def key_digest(key: str) -> bytes:
    """The SHA-256 digest a key is stored and compared as."""
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class OperatorKeys:
    """The digests of every accepted operator key, and whether keyless loopback access holds."""

    digests: tuple[bytes, ...]
    loopback_only_server: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> OperatorKeys:
        digests = [bytes.fromhex(h) for h in settings.api_key_hash_list()]
        digests += [key_digest(k) for k in settings.api_key_list()]
        return cls(tuple(dict.fromkeys(digests)), is_loopback(settings.host))

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        digest = key_digest(presented)
        # Compare with every digest (no early exit) so timing says nothing about which matched.
        matches = [hmac.compare_digest(digest, known) for known in self.digests]
        return any(matches)


def install_operator_keys(app: FastAPI, settings: Settings) -> None:
    """Make ``require_api_key`` work on ``app``, checked before any body is read (call once when
    building the app)."""
    app.state.operator_keys = OperatorKeys.from_settings(settings)
    app.router.route_class = KeyFirstRoute  # routes added from here on check the key first
    if not app.state.operator_keys.digests:
        where = (
            "direct loopback requests only"
            if app.state.operator_keys.loopback_only_server
            else "nobody"
        )
        logger.warning(f"no SWITCHBOARD_API_KEYS set: operator endpoints answer {where}")


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the request presents an operator key (see module doc)."""
    keys: OperatorKeys = request.app.state.operator_keys
    if not keys.digests:
        if keys.loopback_only_server and _direct_from_loopback(request):
            return
        raise HTTPException(
            status_code=403,
            detail="operator endpoints need a key: set SWITCHBOARD_API_KEYS (or SWITCHBOARD_API_KEY)",
        )
    _check_key(keys, request, {"WWW-Authenticate": _REALM})


async def require_caller_data_key(request: Request) -> None:
    """FastAPI dependency for anything of a caller's (numbers, transcripts, recordings) and for
    actions that cost money (outbound calls): 401 unless an operator key is presented. Unlike
    ``require_api_key`` there is no keyless loopback exception: with no key configured nothing
    is served."""
    keys: OperatorKeys = request.app.state.operator_keys
    if not keys.digests:
        raise HTTPException(
            status_code=401,
            detail="call records need an operator key: set SWITCHBOARD_API_KEYS (or SWITCHBOARD_API_KEY)",
        )
    # No Basic challenge: the Calls page sends the key itself, and a challenge would make the
    # browser pop its own password dialog over the page.
    _check_key(keys, request, None)


class KeyFirstRoute(APIRoute):
    """A route that checks its operator key before it reads its body.

    FastAPI reads and parses a JSON body before it runs any dependency, so a stranger's
    malformed body would get a 422 (after costing a parse) instead of a 401. This route runs
    ``require_api_key`` or ``require_caller_data_key``, if it depends on one, first; the
    dependency then checks again, which costs one hash. Routers with operator routes use it
    (``APIRouter(route_class=KeyFirstRoute)``; ``install_operator_keys`` sets it on the app's
    own router).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        calls = {d.call for d in self.dependant.dependencies}
        check = next((c for c in _KEY_CHECKS if c in calls), None)
        if check is None:
            return handler

        async def key_first(request: Request) -> Response:
            await check(request)
            return await handler(request)

        return key_first


def _check_key(keys: OperatorKeys, request: Request, challenge: dict[str, str] | None) -> None:
    if not keys.accepts(_presented_key(request)):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong operator key (X-API-Key, Authorization: Bearer, or Basic password)",
            headers=challenge,
        )


_KEY_CHECKS = (require_caller_data_key, require_api_key)  # the stricter first


def _presented_key(request: Request) -> str | None:
    if (key := request.headers.get("x-api-key")) is not None:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def _direct_from_loopback(request: Request) -> bool:
    if any(h in request.headers for h in _PROXY_HEADERS):
        return False
    return request.client is not None and is_loopback(request.client.host)
