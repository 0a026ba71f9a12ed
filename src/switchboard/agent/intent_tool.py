"""A scripted intent's tool: call its webhook after the reply and speak the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchboard.agent.config import Intent
from switchboard.agent.tools import tool_turn
from switchboard.call.log import ToolCall

if TYPE_CHECKING:
    from switchboard.agent.call_control import CallController


async def run_intent_tool(call: CallController, intent: Intent) -> None:
    """Call ``intent.tool`` with its arguments (``{digits}``: the last digits keyed) and say
    the filled ``answer``, or the tool's filler and failure lines as they apply."""
    tool = call.agent.tool(intent.tool or "")
    assert tool is not None  # validated with the config
    digits = call.keypad.last_digits
    arguments = {k: v.replace("{digits}", digits) for k, v in intent.arguments.items()}
    call.on_hold = True
    call.silence.pause()
    try:
        outcome = await tool_turn(
            tool, intent.answer, arguments, call.say, call_id=call.call_id, secret=call.tool_secret
        )
    finally:
        call.on_hold = False
    call.log.add(
        ToolCall(
            tool=tool.name,
            arguments=arguments,
            ok=outcome.ok,
            error=outcome.error,
            result=outcome.data,
        )
    )
    if outcome.line:
        await call.say(outcome.line)
    call.silence.arm()
