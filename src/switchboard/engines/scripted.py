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
from switchboard.engines.call_actions import IntentFollowUpFrame


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
    that transfers, collects digits, calls a tool or sends digits is followed by
    an ``IntentFollowUpFrame`` for the call controller.
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
        if intent is not None and _has_follow_up(intent):
            await self.push_frame(IntentFollowUpFrame(intent=intent.name))


def _has_follow_up(intent: Intent) -> bool:
    """The call controller has a part after this intent's reply (end_call is the responder's own)."""
    return bool(intent.transfer or intent.tool or intent.collect_digits or intent.send_digits)
