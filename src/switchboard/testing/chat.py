"""A chat LLM for the test tools (the simulated caller): OpenAI chat completions or Anthropic
messages, one request per turn (not streamed), with tools the model may call.

The key goes in a header and nowhere else: it is not in this object's repr, nor in an error's
message. ``base_url`` follows the agent's own ``SWITCHBOARD_LLM_BASE_URL`` convention: the API
root with ``/v1`` for OpenAI (``https://api.openai.com/v1``), without it for Anthropic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from switchboard.errors import SwitchboardError

ChatAPI = Literal["openai", "anthropic"]
_ANTHROPIC_VERSION = "2023-06-01"
_MAX_TOKENS = 200  # a caller's line is a sentence or two


class ChatError(SwitchboardError):
    """The LLM endpoint failed or answered something unreadable; the message says which."""


@dataclass(frozen=True)
class ChatTool:
    """A function the model may call: a name, what it is for and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ChatAnswer:
    """What the model said (may be empty) and the tool it called, if any."""

    text: str
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


class ChatLLM:
    """One endpoint and model; ``complete`` sends a system prompt and alternating user/assistant
    messages, and returns the answer."""

    def __init__(
        self, base_url: str, model: str, api: ChatAPI = "openai", api_key: str = "", timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):  # fmt: skip
        if api not in ("openai", "anthropic"):
            raise ValueError(f"api: {api!r} is not openai or anthropic")
        self.base_url, self.model, self.api = base_url.rstrip("/"), model, api
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._transport = transport

    def __repr__(self) -> str:
        return f"ChatLLM({self.api} {self.model} at {self.base_url})"

    async def complete(self, system: str, messages: list[dict[str, str]], tools: list[ChatTool]) -> ChatAnswer:
        """One answer to ``messages`` (``{"role": "user"|"assistant", "content": ...}``)."""
        url, headers, body = self._request(system, messages, tools)
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s, transport=self._transport) as client:
                response = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as e:
            raise ChatError(f"{self}: {type(e).__name__}: {e}") from None
        if response.status_code != 200:
            raise ChatError(f"{self}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            return _openai_answer(data) if self.api == "openai" else _anthropic_answer(data)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ChatError(f"{self}: an answer it cannot read ({type(e).__name__}: {e})") from None

    def _request(
        self, system: str, messages: list[dict[str, str]], tools: list[ChatTool]
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        if self.api == "openai":
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            body: dict[str, Any] = {
                "model": self.model, "max_tokens": _MAX_TOKENS,
                "messages": [{"role": "system", "content": system}, *messages],
            }  # fmt: skip
            if tools:
                body["tools"] = [
                    {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
                    for t in tools
                ]
            return f"{self.base_url}/chat/completions", headers, body
        headers = {"anthropic-version": _ANTHROPIC_VERSION, **({"x-api-key": self._api_key} if self._api_key else {})}
        body = {"model": self.model, "max_tokens": _MAX_TOKENS, "system": system, "messages": messages}
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
        return f"{self.base_url}/v1/messages", headers, body


def _openai_answer(data: dict[str, Any]) -> ChatAnswer:
    message = data["choices"][0]["message"]
    calls = message.get("tool_calls") or []
    if not calls:
        return ChatAnswer(str(message.get("content") or "").strip())
    function = calls[0]["function"]
    arguments = json.loads(function.get("arguments") or "{}")
    return ChatAnswer(str(message.get("content") or "").strip(), str(function["name"]), dict(arguments))


def _anthropic_answer(data: dict[str, Any]) -> ChatAnswer:
    blocks = data["content"]
    text = " ".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text").strip()
    use = next((b for b in blocks if b.get("type") == "tool_use"), None)
    if use is None:
        return ChatAnswer(text)
    return ChatAnswer(text, str(use["name"]), dict(use.get("input") or {}))
