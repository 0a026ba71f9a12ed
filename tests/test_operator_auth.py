"""Operator endpoints and pages need an operator key; several keys work at once, and hashed ones.

The shared stack's orchestrator and worker accept every kind of key (conftest.stack_env); a
second orchestrator of this module's own has no key at all.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import ValidationError

from conftest import (
    HASHED_ONLY_KEY,
    LEGACY_KEY,
    ROTATING_KEYS,
    Server,
    Stack,
    start_orchestrator,
)
from switchboard.http.auth import OperatorKeys
from switchboard.settings import Settings

OLD_KEY, NEW_KEY = ROTATING_KEYS
OPERATOR_PATHS = ["/stats", "/metrics", "/dashboard", "/calls/call-nobody"]
WORKER_PATHS = ["/metrics", "/calls", "/calls/CA-nobody"]


@dataclass
class Keyed:
    keyed: Server
    keyless: Server
    worker: Server


@pytest.fixture(scope="module")
def stack(shared_stack: Stack) -> Iterator[Keyed]:
    # No key at all (the test servers get one by default: clear it).
    keyless = start_orchestrator(
        shared_stack.redis.url, {"SWITCHBOARD_LOG_LEVEL": "INFO", "SWITCHBOARD_API_KEY": ""}
    )
    try:
        yield Keyed(shared_stack.orchestrator, keyless, shared_stack.worker)
    finally:
        keyless.stop()


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"operator:{password}".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": OLD_KEY},
        {"X-API-Key": NEW_KEY},
        {"X-API-Key": LEGACY_KEY},
        {"Authorization": f"Bearer {HASHED_ONLY_KEY}"},
        {"Authorization": basic(NEW_KEY)},
    ],
    ids=["rotating-old", "rotating-new", "legacy-setting", "hashed-bearer", "browser-basic"],
)
def test_every_configured_key_opens_operator_endpoints(
    stack: Keyed, headers: dict[str, str]
) -> None:
    for path in OPERATOR_PATHS:
        response = httpx.get(f"{stack.keyed.base_url}{path}", headers=headers, timeout=5)
        assert response.status_code in (200, 404), (path, response.status_code, response.text)
    for path in WORKER_PATHS:
        response = httpx.get(f"{stack.worker.base_url}{path}", headers=headers, timeout=5)
        assert response.status_code in (200, 404), (path, response.status_code, response.text)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": basic("wrong")},
        {"Authorization": "Basic !!"},
    ],
    ids=["none", "wrong-header", "wrong-bearer", "wrong-basic", "garbled-basic"],
)
def test_a_missing_or_wrong_key_gets_401_with_a_basic_challenge(
    stack: Keyed, headers: dict[str, str]
) -> None:
    for base, paths in (
        (stack.keyed.base_url, OPERATOR_PATHS),
        (stack.worker.base_url, WORKER_PATHS),
    ):
        for path in paths:
            response = httpx.get(f"{base}{path}", headers=headers, timeout=5)
            assert response.status_code == 401, (path, response.status_code)
            # Operator pages challenge for a browser's Basic login; call records (which the
            # Calls page asks for with the key itself) do not.
            challenge = response.headers.get("WWW-Authenticate", "")
            if path.startswith("/calls"):
                assert not challenge, path
            else:
                assert challenge.startswith("Basic realm="), path


def test_public_endpoints_need_no_key(stack: Keyed) -> None:
    for path in ("/", "/static/phone.js", "/health/live"):
        assert httpx.get(f"{stack.keyed.base_url}{path}", timeout=5).status_code == 200, path
    assert httpx.get(f"{stack.worker.base_url}/health", timeout=5).status_code == 200


def test_without_a_key_only_direct_loopback_requests_get_in(stack: Keyed) -> None:
    assert httpx.get(f"{stack.keyless.base_url}/stats", timeout=5).status_code == 200
    proxied = httpx.get(
        f"{stack.keyless.base_url}/stats", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5
    )
    assert proxied.status_code == 403 and "SWITCHBOARD_API_KEYS" in proxied.json()["detail"]


def test_a_server_bound_to_a_public_address_without_keys_lets_nobody_in() -> None:
    keys = OperatorKeys.from_settings(Settings(host="0.0.0.0"))
    assert keys.digests == () and not keys.loopback_only_server
    assert OperatorKeys.from_settings(Settings(host="127.0.0.1")).loopback_only_server


def test_a_malformed_key_hash_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="api_key_hashes"):
        Settings(api_key_hashes="not-a-digest")
