"""LLM-simulated callers: a persona and a goal, the caller's lines written turn by turn from what
the caller heard the agent say, spoken by the suite's caller voice through the real telephony path.

The caller simulator asks for each line once the agent's reply has ended (and Whisper has
heard it); the LLM sees the persona and goal as its instructions, the agent's lines as the
user's and its own lines as the assistant's. It ends the call by calling ``finish_call``
(goal reached, or given up), or runs out of turns, or the agent hangs up. The call is then
judged like any scenario's, its lines standing in for steps, plus whether the goal was reached.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from switchboard.loadtest.caller import CallerTurn
from switchboard.loadtest.report import CallOutcome, CallResult
from switchboard.testing.chat import ChatError, ChatLLM, ChatTool
from switchboard.testing.judge import LLMJudge, judge_call
from switchboard.testing.results import CallerView, Check, ScenarioResult
from switchboard.testing.scenario import MAX_LINE_CHARS, Scenario, SimulatedCaller, Step
from switchboard.testing.voice import DEFAULT_CACHE, load_voice, spoken_clip

FINISH_TOOL = ChatTool(
    name="finish_call",
    description=(
        "End the call: your goal is reached, or you are sure it cannot be reached. A goodbye may go "
        "in the same message; the call ends after it."
    ),
    parameters={
        "type": "object",
        "properties": {
            "outcome": {"type": "string", "enum": ["goal_reached", "gave_up"]},
            "reason": {"type": "string", "description": "One short sentence: why the call is over for you"},
        },
        "required": ["outcome"],
    },
)
_NOTHING_HEARD = "(silence: you heard nothing)"
_REASON_CHARS = 200


def caller_prompt(caller: SimulatedCaller) -> str:
    """The simulated caller's instructions: who it is, what it wants, how to speak and to finish."""
    return (
        "You are a person on a phone call with a business's voice agent. Stay in character.\n"
        f"Who you are: {caller.persona.strip()}\n"
        f"Your goal for this call: {caller.goal.strip()}\n"
        "Each user message is what you just heard the agent say, through speech recognition (a word may be "
        "wrong). Answer with only what you say next, as spoken words: one or two short sentences, no stage "
        "directions, no lists. When your goal is reached, or you are sure it cannot be, call finish_call."
    )


def spoken_line(text: str) -> str:
    """A line the voice can say: no stage directions or quotes around it, one line, bounded."""
    text = re.sub(r"\*[^*]*\*|\[[^\]]*\]|\([^)]*\)", " ", text)
    text = " ".join(text.split()).strip("\"' ")
    return text[:MAX_LINE_CHARS].rstrip()


class CallerBrain:
    """A scenario's simulated caller during its call: the caller simulator's turn source."""

    def __init__(
        self, scenario: Scenario, llm: ChatLLM, voice_cache: Path = DEFAULT_CACHE,
        progress: Callable[[str], None] | None = None,
    ):  # fmt: skip
        assert scenario.caller is not None
        self._scenario, self._caller, self._llm = scenario, scenario.caller, llm
        self._voice_cache = voice_cache
        self._progress = progress
        self._system = caller_prompt(scenario.caller)
        self._messages: list[dict[str, str]] = []
        self._done = False
        self.view = CallerView(persona=scenario.caller.persona, goal=scenario.caller.goal)

    @property
    def hangup_expected(self) -> bool:
        """After its goodbye (goal reached or given up) the caller lets the agent hang up, when
        the scenario expects it to; out of turns or without its LLM it hangs up at once."""
        return self._scenario.agent_hangs_up and self.view.ending in ("goal_reached", "gave_up")

    @property
    def _voice(self) -> str:
        return self._scenario.voice or "caller"

    async def prepare(self) -> None:
        """Load the caller's ears (Whisper) and voice before it dials: they take seconds on a
        first call, and an agent kept waiting for its first answer re-prompts."""
        from switchboard.engines.whisper import shared_whisper  # heavy: only for simulated callers

        await asyncio.to_thread(shared_whisper)
        await asyncio.to_thread(load_voice, self._voice)
        if self._caller.opening:
            await asyncio.to_thread(spoken_clip, self._caller.opening, self._voice, self._voice_cache)

    async def next_turn(self, index: int, heard: str) -> CallerTurn | None:
        line = await self.next_line(index, heard)
        if line is None:
            return None
        audio = await asyncio.to_thread(spoken_clip, line, self._voice, self._voice_cache)
        return CallerTurn(audio=audio, expected_text=line, pause_before_ms=self._caller.pause_ms)

    async def next_line(self, index: int, heard: str) -> str | None:
        """The caller's line ``index`` after hearing ``heard``; None: it is done (``view.ending`` says why)."""
        if self._done:
            return None
        self._messages.append({"role": "user", "content": heard.strip() or _NOTHING_HEARD})
        if index >= self._caller.max_turns:
            return self._finish("max_turns")
        finish: tuple[str, str] | None = None
        if index == 0 and self._caller.opening:
            line = self._caller.opening
        else:
            try:
                answer = await self._llm.complete(self._system, self._messages, [FINISH_TOOL])
            except ChatError as e:
                return self._finish("llm_error", str(e))
            line = spoken_line(answer.text)
            if answer.tool == FINISH_TOOL.name:
                outcome = answer.arguments.get("outcome")
                finish = (outcome if outcome in ("goal_reached", "gave_up") else "gave_up", str(answer.arguments.get("reason") or ""))
            elif not line:
                finish = ("gave_up", "the caller's LLM had nothing to say")
        if line:
            self._messages.append({"role": "assistant", "content": line})
            self.view.lines.append(line)
            self._say(f'{self._scenario.name} [turn {index + 1}] heard "{heard.strip()}" → says "{line}"')
        if finish is not None:
            self._finish(*finish)  # its last words, if any, are still said
        return line or None

    def _finish(self, ending: str, reason: str = "") -> None:
        """The caller is done: no more lines; ``view.ending`` says why."""
        self._done = True
        self.view.ending, self.view.reason = ending, reason[:_REASON_CHARS]
        self._say(f"{self._scenario.name}: {self.view.ending_words}")

    def _say(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)

    async def verdict(
        self, result: CallResult, record: dict[str, Any], judge: LLMJudge | None = None
    ) -> ScenarioResult:
        """The scenario's verdict: the call judged with the caller's spoken lines as its steps,
        and whether the caller reached its goal (or, ``expect.goal_reached: false``, did not)."""
        spoken = self.view.lines[: len(result.turns)]  # a line written as the agent hung up was never said
        self.view.lines = spoken
        if not self.view.ending:
            self.view.ending = "agent_hung_up" if result.outcome is CallOutcome.AGENT_HUNG_UP else "call_ended"
        steps = [Step(say=line, pause_ms=self._caller.pause_ms) for line in spoken]
        verdict = await judge_call(self._scenario.model_copy(update={"steps": steps}), result, record, judge)
        wanted = self._scenario.expect.goal_reached is not False
        reached = self.view.ending == "goal_reached"
        verdict.checks.append(Check(
            what="the caller reached its goal" if wanted else "the caller did not reach its goal",
            passed=reached == wanted, detail=self.view.ending_words,
        ))  # fmt: skip
        verdict.caller = self.view
        verdict.passed = verdict.passed and reached == wanted
        return verdict
