"""Tools for LLM responders: ``end_call``, ``transfer_call``, ``send_digits`` and the agent's webhooks.

An LLM agent hangs up, hands the caller to a person or presses keys on a remote phone menu (an
IVR) by calling these functions; the handler pushes a
:mod:`~switchboard.engines.call_actions` frame and the call controller does the rest,
exactly as for a scripted intent. ``transfer_call`` may only send the caller to a destination
the agent config names (an intent with ``transfer:``), never to a number the model made up;
``send_digits`` takes only a valid dial string (0-9, * and #, w for a pause), anything else is
handed back to the model as an error. The agent's ``tools`` (HTTP webhooks) are offered with
their JSON schemas; a slow one gets its filler line spoken, and a failure is handed to the
model as ``{"error": <failure>}``.
"""

from __future__ import annotations

from loguru import logger
from pipecat.adapters.schemas.function_schema import FunctionSchema
from pipecat.adapters.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    Frame,
    FunctionCallResultProperties,
    LLMContextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams, LLMService

from switchboard.agent.config import DIAL_STRING_PATTERN, AgentConfig, valid_dial_string
from switchboard.agent.tools import tool_turn
from switchboard.call_log import ToolCall, current_log
from switchboard.engines.call_actions import HangUpFrame, IntentFollowUpFrame, SendDigitsFrame
from switchboard.observability import metrics
from switchboard.observability.logging import current_call_id

_DONE = FunctionCallResultProperties(run_llm=False)


def call_tools(agent: AgentConfig) -> list[FunctionSchema]:
    """The tool schemas an agent's LLM gets: call control, then the agent's webhooks."""
    tools = [
        FunctionSchema(
            name="end_call",
            description="Hang up once the caller has nothing more to ask. Say goodbye in `goodbye`.",
            properties={"goodbye": {"type": "string", "description": "The last sentence to say."}},
            required=["goodbye"],
        ),
        FunctionSchema(
            name="send_digits",
            description="Press keys on the phone keypad, to answer an automated phone menu "
            "(press 1 for ...) or enter a number it asks for.",
            properties={
                "digits": {
                    "type": "string",
                    "pattern": DIAL_STRING_PATTERN,
                    "description": "The keys in order: 0-9, * and #; w waits half a second.",
                }
            },
            required=["digits"],
        ),
    ]
    destinations = [i.name for i in agent.intents if i.transfer]
    if destinations:
        tools.append(
            FunctionSchema(
                name="transfer_call",
                description="Connect the caller to a person. Use when they ask for one.",
                properties={"destination": {"type": "string", "enum": destinations}},
                required=["destination"],
            )
        )
    for tool in agent.tools:
        tools.append(
            FunctionSchema(
                name=tool.name,
                description=tool.description,
                properties=tool.parameters.get("properties", {}),
                required=list(tool.parameters.get("required", [])),
            )
        )
    return tools


class CallToolsMixin:
    """Gives an LLM service the call-control tools (mixed in before the Pipecat service)."""

    def install_call_tools(self, agent: AgentConfig, tool_secret: str | None = None) -> None:
        assert isinstance(self, LLMService)
        self._call_agent = agent
        self._tool_secret = tool_secret
        self._call_tools = ToolsSchema(standard_tools=call_tools(agent))
        self.register_function("end_call", self._end_call)
        self.register_function("transfer_call", self._transfer_call)
        self.register_function("send_digits", self._send_digits)
        for tool in agent.tools:
            self.register_function(tool.name, self._webhook, timeout_secs=tool.timeout_secs + 5)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        # The call's context is made by the pipeline without tools; they are added on first use.
        tools = getattr(self, "_call_tools", None)
        if tools is not None and isinstance(frame, LLMContextFrame) and not frame.context.tools:
            frame.context.set_tools(tools)
        await super().process_frame(frame, direction)  # type: ignore[misc]

    async def _end_call(self, params: FunctionCallParams) -> None:
        goodbye = str(params.arguments.get("goodbye") or "Goodbye.")
        metrics.LLM_TOOL_CALLS.labels(tool="end_call", result="ok").inc()
        await params.result_callback({"ok": True}, properties=_DONE)
        await params.llm.push_frame(HangUpFrame(goodbye=goodbye))

    async def _transfer_call(self, params: FunctionCallParams) -> None:
        destination = str(params.arguments.get("destination", ""))
        intent = self._call_agent.intent(destination)
        if intent is None or not intent.transfer:
            metrics.LLM_TOOL_CALLS.labels(tool="transfer_call", result="unknown_destination").inc()
            logger.warning(f"LLM asked to transfer to unknown destination {destination!r}")
            await params.result_callback({"error": f"unknown destination {destination!r}"})
            return
        metrics.LLM_TOOL_CALLS.labels(tool="transfer_call", result="ok").inc()
        await params.result_callback({"ok": True}, properties=_DONE)
        await params.llm.push_frame(IntentFollowUpFrame(intent=intent.name, line=intent.reply))

    async def _send_digits(self, params: FunctionCallParams) -> None:
        digits = str(params.arguments.get("digits", ""))
        if not valid_dial_string(digits):
            metrics.LLM_TOOL_CALLS.labels(tool="send_digits", result="invalid_digits").inc()
            logger.warning(f"LLM asked to send an invalid dial string {digits!r}")
            await params.result_callback(
                {"error": f"{digits!r} is not a dial string: use 0-9, * and #, w for a pause"}
            )
            return
        metrics.LLM_TOOL_CALLS.labels(tool="send_digits", result="ok").inc()
        await params.result_callback({"ok": True, "sent": digits}, properties=_DONE)
        await params.llm.push_frame(SendDigitsFrame(digits=digits))

    async def _webhook(self, params: FunctionCallParams) -> None:
        tool = self._call_agent.tool(params.function_name)
        assert tool is not None

        async def say(text: str) -> None:
            await params.llm.push_frame(TTSSpeakFrame(text))

        outcome = await tool_turn(
            tool,
            None,
            dict(params.arguments),
            say,
            call_id=current_call_id(),
            secret=self._tool_secret,
        )
        if (log := current_log()) is not None:
            log.add(
                ToolCall(
                    tool=tool.name,
                    by="llm",
                    arguments=dict(params.arguments),
                    ok=outcome.ok,
                    error=outcome.error,
                    result=outcome.data,
                )
            )
        await params.result_callback(outcome.data if outcome.ok else {"error": tool.failure})
