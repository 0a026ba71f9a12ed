"""LLM emulator: OpenAI chat completions and Anthropic messages, streamed as server-sent events.

The reply comes from a rule table (the first rule whose pattern matches the last user
message wins) or, without one, echoes the caller. It streams word-sized tokens after the
profile's time to first token, at its token rate; a rule's tool call comes streamed or whole,
as the request asked. Rules are keywords, not understanding: a rule table that plays the
simulated caller of a scenario suite (it "hears" the agent's line as its user message) is as
scripted as the suite's own steps, only driven through the caller-LLM path.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from switchboard.emulators.profiles import LLMProfile
from switchboard.emulators.stats import EmulatorStats
from switchboard.errors import ConfigError

GREETING_REPLY = "Hello! How can I help you today?"


class ReplyRules:
    """Ordered rules; ``{user}`` in a reply is replaced by what the caller said.

    A rule may also call a tool: ``{match, reply, tool: NAME, arguments: {...}}`` streams the
    reply (may be empty), then the tool call (OpenAI ``tool_calls`` deltas, or an Anthropic
    ``tool_use`` block with ``input_json_delta``s), if the request offered that tool; the
    request carrying the tool's result (an OpenAI ``tool`` message, an Anthropic
    ``tool_result`` block) gets ``after_tool`` (``{result}``: its content).
    """

    def __init__(
        self,
        rules: list[tuple[str, str]] | None = None,
        tools: list[tuple[str, dict] | None] | None = None,
        after_tool: list[str] | None = None,
    ):
        self._rules = [(re.compile(p, re.IGNORECASE), r) for p, r in rules or []]
        self._tools = list(tools or [None] * len(self._rules))
        self._after_tool = list(after_tool or [""] * len(self._rules))

    @classmethod
    def load(cls, path: str | Path) -> ReplyRules:
        """A YAML list of ``{match: regex, reply: text}`` (plus optional ``tool``, ``arguments``)."""
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, list) or not all(
            isinstance(r, dict) and "match" in r and ("reply" in r or "tool" in r) for r in raw
        ):
            raise ConfigError(f"LLM rules {path}: expected a list of {{match, reply}} mappings")
        return cls(
            [(str(r["match"]), str(r.get("reply", ""))) for r in raw],
            [(str(r["tool"]), dict(r.get("arguments") or {})) if r.get("tool") else None for r in raw],
            [str(r.get("after_tool", "")) for r in raw],
        )

    def _first(self, user_text: str) -> int | None:
        return next((i for i, (p, _) in enumerate(self._rules) if p.search(user_text)), None)

    def reply(self, user_text: str) -> str:
        if not user_text.strip():
            return GREETING_REPLY
        i = self._first(user_text)
        if i is not None:
            return self._rules[i][1].replace("{user}", user_text.strip())
        return (
            f"You said: {user_text.strip().rstrip('.?!')}. Is there anything else I can help with?"
        )

    def after_tool(self, user_text: str, result: str) -> str:
        """The reply once a tool answered: the rule's ``after_tool`` with ``{result}`` filled."""
        i = self._first(user_text) if user_text.strip() else None
        template = self._after_tool[i] if i is not None else ""
        return template.replace("{result}", result) if template else "Done."

    def tool(self, user_text: str, offered: set[str]) -> tuple[str, dict] | None:
        """The tool call the first matching rule makes, if the request offered that tool."""
        i = self._first(user_text) if user_text.strip() else None
        call = self._tools[i] if i is not None else None
        return call if call is not None and call[0] in offered else None


def tokens(text: str) -> list[str]:
    """Word-sized pieces that join back to ``text`` (leading spaces kept, as real tokenizers do)."""
    return re.findall(r"\s*\S+", text)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and tool_result(message) is None:
            return _content_text(message.get("content"))
    return ""


def tool_result(message: dict) -> str | None:
    """The content of an Anthropic ``tool_result`` block in ``message`` (None: there is none)."""
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return None
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            return _content_text(block.get("content", ""))
    return None


async def _paced(pieces: list[str], profile: LLMProfile) -> AsyncIterator[str]:
    await asyncio.sleep(profile.ttft_ms / 1000)
    for i, piece in enumerate(pieces):
        if i:
            await asyncio.sleep(1 / profile.tokens_per_sec)
        yield piece


def _sse(data: dict | str, event: str | None = None) -> str:
    body = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


def create_app(profile: LLMProfile, rules: ReplyRules | None = None) -> FastAPI:
    """The emulator's ASGI app."""
    rules = rules or ReplyRules()
    app = FastAPI(title="LLM emulator")
    stats = EmulatorStats()

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True, "provider": "llm"}

    @app.get("/stats")
    async def get_stats() -> dict:
        return stats.as_dict()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "invalid_api_key", "Missing bearer token")
        body = await request.json()
        stats.connections += 1
        stats.items.append({"api": "openai", "messages": body.get("messages", [])})
        model = body.get("model", "gpt-4o-mini")
        user_text = last_user_text(body.get("messages", []))
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        last = (body.get("messages") or [{}])[-1]
        tool = rules.tool(user_text, offered) if last.get("role") != "tool" else None
        reply = rules.reply(user_text)
        if last.get("role") == "tool":  # answer the tool's result, as a model would
            reply = rules.after_tool(user_text, _content_text(last.get("content")))
        pieces = tokens(reply)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {
            "prompt_tokens": 20,
            "completion_tokens": len(pieces),
            "total_tokens": 20 + len(pieces),
        }
        if not body.get("stream"):
            await asyncio.sleep(profile.ttft_ms / 1000 + len(pieces) / profile.tokens_per_sec)
            message: dict = {"role": "assistant", "content": reply or None}
            if tool is not None:
                stats.items.append({"api": "openai", "tool_call": tool[0], "arguments": tool[1]})
                message["tool_calls"] = [_openai_tool_call(tool, index=None)]
            return {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "stop" if tool is None else "tool_calls",
                    }
                ],
                "usage": usage,
            }

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        async def stream() -> AsyncIterator[str]:
            first = True
            async for piece in _paced(pieces, profile):
                yield _sse(
                    chunk({"role": "assistant", "content": piece} if first else {"content": piece})
                )
                first = False
            if tool is not None:
                stats.items.append({"api": "openai", "tool_call": tool[0], "arguments": tool[1]})
                call = _openai_tool_call(tool, index=0)
                yield _sse(chunk({"role": "assistant", "tool_calls": [call]} if first else {"tool_calls": [call]}))
                yield _sse(chunk({}, "tool_calls"))
            else:
                yield _sse(chunk({}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _sse(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            yield _sse("[DONE]")

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/messages")
    async def messages(request: Request):
        if not (request.headers.get("x-api-key") or request.headers.get("authorization")):
            return _error(401, "authentication_error", "x-api-key header is required")
        body = await request.json()
        stats.connections += 1
        stats.items.append(
            {"api": "anthropic", "system": body.get("system"), "messages": body.get("messages", [])}
        )
        model = body.get("model", "claude-haiku-4-5")
        messages = body.get("messages") or [{}]
        user_text = last_user_text(messages)
        result = tool_result(messages[-1])
        offered = {t.get("name") for t in body.get("tools") or []}
        tool = rules.tool(user_text, offered) if result is None else None
        reply = rules.reply(user_text) if result is None else rules.after_tool(user_text, result)
        pieces = tokens(reply)
        mid = f"msg_{uuid.uuid4().hex[:24]}"
        if not body.get("stream"):
            await asyncio.sleep(profile.ttft_ms / 1000 + len(pieces) / profile.tokens_per_sec)
            content: list[dict] = [{"type": "text", "text": "".join(pieces)}] if pieces or tool is None else []
            if tool is not None:
                stats.items.append({"api": "anthropic", "tool_call": tool[0], "arguments": tool[1]})
                content.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": tool[0], "input": tool[1]})
            return {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "end_turn" if tool is None else "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": 20, "output_tokens": len(pieces)},
            }

        async def stream() -> AsyncIterator[str]:
            yield _sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 20, "output_tokens": 1},
                    },
                },
                "message_start",
            )
            index = 0
            if pieces or tool is None:  # a tool-only turn opens with its tool_use block
                yield _block_start(index, {"type": "text", "text": ""})
                async for piece in _paced(pieces, profile):
                    yield _block_delta(index, {"type": "text_delta", "text": piece})
                yield _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
                index += 1
            if tool is not None:
                if not pieces:
                    await asyncio.sleep(profile.ttft_ms / 1000)
                stats.items.append({"api": "anthropic", "tool_call": tool[0], "arguments": tool[1]})
                tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
                block = {"type": "tool_use", "id": tool_id, "name": tool[0], "input": {}}
                yield _block_start(index, block)
                arguments = json.dumps(tool[1])
                for part in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                    yield _block_delta(index, {"type": "input_json_delta", "partial_json": part})
                yield _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            yield _sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": "end_turn" if tool is None else "tool_use",
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": len(pieces)},
                },
                "message_delta",
            )
            yield _sse({"type": "message_stop"}, "message_stop")

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


def _openai_tool_call(tool: tuple[str, dict], index: int | None) -> dict:
    """One OpenAI ``tool_calls`` entry (``index`` only in a streamed delta)."""
    call = {
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": tool[0], "arguments": json.dumps(tool[1])},
    }
    return call if index is None else {"index": index, **call}


def _block_start(index: int, block: dict) -> str:
    return _sse(
        {"type": "content_block_start", "index": index, "content_block": block},
        "content_block_start",
    )


def _block_delta(index: int, delta: dict) -> str:
    return _sse(
        {"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": code, "code": code}}, status_code=status
    )
