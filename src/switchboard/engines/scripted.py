"""A scripted responder that sits where an LLM would: context in, response text out."""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from switchboard.agent.config import Intent
from switchboard.agent.intents import IntentMatcher, Match
from switchboard.call_log import IntentMatched, current_log
from switchboard.engines.call_actions import Action, CallActionFrame


def last_user_text(context: LLMContext) -> str:
    """Text of the newest user message in a context ('' when there is none)."""
    for message in reversed(context.get_messages()):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class ScriptedResponder(FrameProcessor):
    """Answers each finished user turn with the reply of the first matching intent.

    It speaks the same frames an LLM service does, so an LLM can take its place in the
    pipeline unchanged. A reply whose intent ends the call hangs up once it has been spoken; one
    that transfers, collects digits, calls a tool or sends digits is followed by a
    ``CallActionFrame`` for the call controller.
    """

    def __init__(self, matcher: IntentMatcher, **kwargs):
        super().__init__(**kwargs)
        self._matcher = matcher
        self._hang_up_after_reply = False
        self.matches: list[Match] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            if not frame.speculation:
                await self._respond(last_user_text(frame.context))
            return
        if isinstance(frame, BotStoppedSpeakingFrame) and self._hang_up_after_reply:
            self._hang_up_after_reply = False
            logger.info(f"{self}: goodbye spoken, ending the call")
            await self.push_frame(EndWorkerFrame(), FrameDirection.UPSTREAM)
        await self.push_frame(frame, direction)

    async def _respond(self, utterance: str) -> None:
        match = self._matcher.match(utterance)
        self.matches.append(match)
        if (log := current_log()) is not None:
            log.add(IntentMatched(intent=match.name))
        # A caller's words are theirs: only at DEBUG (production logs at INFO).
        logger.debug(f"{self}: caller said {utterance!r} -> intent {match.name}")
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(LLMTextFrame(match.reply))
        await self.push_frame(LLMFullResponseEndFrame())
        self._hang_up_after_reply = match.end_call
        intent = match.intent
        action = _follow_up(intent)
        if intent is not None and action is not None:
            await self.push_frame(CallActionFrame(action=action, intent=intent.name))


def _follow_up(intent: Intent | None) -> Action | None:
    """The call controller's part after this intent's reply (end_call is the responder's own)."""
    if intent is None:
        return None
    if intent.transfer:
        return "transfer"
    if intent.tool:
        return "tool"
    if intent.collect_digits:
        return "collect_digits"
    if intent.send_digits:
        return "send_digits"
    return None
