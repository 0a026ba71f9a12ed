"""A scripted intent's tool: call its webhook after the reply, and say what to answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from switchboard.agent.config import AgentConfig, Intent
from switchboard.agent.tools import tool_turn
from switchboard.call_log import ToolCall


async def intent_tool_call(
    agent: AgentConfig,
    intent: Intent,
    digits: str,
    say: Callable[[str], Awaitable[None]],
    *,
    call_id: str,
    secret: str | None,
) -> tuple[ToolCall, str | None]:
    """Call ``intent.tool`` with its arguments (``{digits}``: the last digits keyed), saying its
    filler meanwhile if it is slow; the call as logged, and the line to say after (the filled
    ``answer``, or the tool's failure line)."""
    tool = agent.tool(intent.tool or "")
    assert tool is not None  # validated with the config
    arguments = {k: v.replace("{digits}", digits) for k, v in intent.arguments.items()}
    outcome = await tool_turn(tool, intent.answer, arguments, say, call_id=call_id, secret=secret)
    logged = ToolCall(
        tool=tool.name, arguments=arguments, ok=outcome.ok, error=outcome.error, result=outcome.data
    )
    return logged, outcome.line
