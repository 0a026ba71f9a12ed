"""Agent tools: HTTP webhooks an agent calls mid-call, signed, bounded in time, checked.

A tool gets ``POST {"tool": name, "call_id": ..., "arguments": {...}}`` as JSON, with
``X-Switchboard-Signature: t=<unix secs>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` when
``SWITCHBOARD_TOOL_SIGNING_SECRET`` is set, and must answer 2xx with a JSON object within the
tool's ``timeout_secs``. Anything else (timeout, error status, not JSON, not an object) is a
failure with a reason: the caller hears the tool's ``failure`` line, the call goes on, and
``agent_tool_calls_total{tool,result}`` counts it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from loguru import logger

from switchboard.agent.config import Tool, fits_spoken_limits
from switchboard.observability import metrics

SIGNATURE_HEADER = "X-Switchboard-Signature"
_CLIENTS: dict[int, httpx.AsyncClient] = {}  # one pool per event loop, shared by its calls


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer: ``data`` when ``ok``, else ``error`` says why not."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _client() -> httpx.AsyncClient:
    key = id(asyncio.get_running_loop())
    client = _CLIENTS.get(key)
    if client is None or client.is_closed:
        client = _CLIENTS[key] = httpx.AsyncClient(
            limits=httpx.Limits(max_keepalive_connections=20)
        )
    return client


async def close_clients() -> None:
    """Close the webhook client of the running loop and forget the others (worker shutdown)."""
    client = _CLIENTS.pop(id(asyncio.get_running_loop()), None)
    _CLIENTS.clear()  # any other loop's client went with its loop
    if client is not None:
        await client.aclose()


async def call_tool(
    tool: Tool, arguments: dict[str, Any], *, call_id: str, secret: str | None
) -> ToolResult:
    """POST the tool's webhook and return its JSON object, or why there is none."""
    body = json.dumps({"tool": tool.name, "call_id": call_id, "arguments": arguments}).encode()
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, int(time.time()), body)
    result = await _post(tool, body, headers)
    metrics.AGENT_TOOL_CALLS.labels(
        tool=tool.name, result="ok" if result.ok else result.error
    ).inc()
    if not result.ok:
        logger.warning(f"tool {tool.name} failed: {result.error}")
    return result


async def _post(tool: Tool, body: bytes, headers: dict[str, str]) -> ToolResult:
    try:
        response = await _client().post(
            tool.url, content=body, headers=headers, timeout=tool.timeout_secs
        )
    except httpx.TimeoutException:
        return ToolResult(False, error="timeout")
    except httpx.HTTPError:
        return ToolResult(False, error="unreachable")
    if not response.is_success:
        return ToolResult(False, error="http_error")
    try:
        data = response.json()
    except ValueError:
        return ToolResult(False, error="bad_response")
    if not isinstance(data, dict):
        return ToolResult(False, error="bad_response")
    return ToolResult(True, data)


def render_answer(template: str, data: dict[str, Any]) -> str | None:
    """The answer template filled with the result's top-level fields; None if one is missing,
    or if the filled line is longer than any line of the agent's own may be (a tool's field
    of megabytes would otherwise be synthesised whole)."""
    values = {k: v for k, v in data.items() if isinstance(v, str | int | float)}
    try:
        line = template.format(**values)
    except (KeyError, IndexError, ValueError):
        return None
    return line if fits_spoken_limits(line) else None


@dataclass(frozen=True)
class ToolTurn:
    """What a tool call gave the conversation: the line to say, and whether it worked."""

    ok: bool
    line: str | None
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)


async def tool_turn(
    tool: Tool,
    answer: str | None,
    arguments: dict[str, Any],
    say: Callable[[str], Awaitable[None]],
    *,
    call_id: str,
    secret: str | None,
) -> ToolTurn:
    """Call the tool; if it is slower than ``filler_after_secs``, ``say`` its filler meanwhile.
    The answer template filled with the result, or the tool's failure line."""
    pending = asyncio.ensure_future(call_tool(tool, arguments, call_id=call_id, secret=secret))
    done, _ = await asyncio.wait({pending}, timeout=tool.filler_after_secs)
    if not done and tool.filler:
        await say(tool.filler)
    result = await pending
    if not result.ok:
        return ToolTurn(False, tool.failure, result.error)
    if answer is None:
        return ToolTurn(True, None, data=result.data)
    line = render_answer(answer, result.data)
    if line is None:
        return ToolTurn(False, tool.failure, "template", data=result.data)
    return ToolTurn(True, line, data=result.data)
