"""Call-control tools for LLM responders: ``end_call`` and ``transfer_call``.

An LLM agent hangs up or hands the caller to a person by calling these functions; the handler
pushes a :class:`~switchboard.agent.call_control.CallActionFrame` and the call controller does
the rest, exactly as for a scripted intent. ``transfer_call`` may only send the caller to a
destination the agent config names (an intent with ``transfer:``), never to a number the model
made up.
"""

from __future__ import annotations

from loguru import logger
from pipecat.adapters.schemas.function_schema import FunctionSchema
from pipecat.adapters.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import Frame, FunctionCallResultProperties, LLMContextFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams, LLMService

from switchboard.agent.call_control import CallActionFrame
from switchboard.agent.config import AgentConfig
from switchboard.observability import metrics

_DONE = FunctionCallResultProperties(run_llm=False)


def call_tools(agent: AgentConfig) -> list[FunctionSchema]:
    """The tool schemas an agent's LLM gets."""
    tools = [
        FunctionSchema(
            name="end_call",
            description="Hang up once the caller has nothing more to ask. Say goodbye in `goodbye`.",
            properties={"goodbye": {"type": "string", "description": "The last sentence to say."}},
            required=["goodbye"],
        )
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
    return tools


class CallToolsMixin:
    """Gives an LLM service the call-control tools (mixed in before the Pipecat service)."""

    def install_call_tools(self, agent: AgentConfig) -> None:
        assert isinstance(self, LLMService)
        self._call_agent = agent
        self._call_tools = ToolsSchema(standard_tools=call_tools(agent))
        self.register_function("end_call", self._end_call)
        self.register_function("transfer_call", self._transfer_call)

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
        await params.llm.push_frame(CallActionFrame(action="end_call", intent="", text=goodbye))

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
        await params.llm.push_frame(
            CallActionFrame(action="transfer", intent=intent.name, text=intent.reply)
        )
