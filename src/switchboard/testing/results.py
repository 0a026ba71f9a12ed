"""What a suite run found: checks in words a person reads, per step and per scenario (JSON-able)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Check(BaseModel):
    """One expectation and whether it held; ``detail`` says what happened, in plain words."""

    what: str
    passed: bool
    detail: str = ""


class StepView(BaseModel):
    """One caller step as it went: what the agent heard, said and did, and how fast."""

    index: int
    label: str
    heard: str = Field("", description="What the agent transcribed of the caller (its record)")
    replied: str = Field("", description="What the agent said after this step (its record)")
    caller_heard: str = Field("", description="What the caller made of that reply (Whisper, on the caller's side)")
    intents: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list, description="Transfers, digits, tools, key presses")
    caller_start_s: float | None = None
    caller_end_s: float | None = None
    reply_start_s: float | None = None
    latency_ms: float | None = None
    barge_in: bool = False
    checks: list[Check] = Field(default_factory=list)


class CallerView(BaseModel):
    """A simulated caller: who it played, what it wanted, the lines it wrote and how it ended."""

    persona: str
    goal: str
    lines: list[str] = Field(default_factory=list)
    ending: str = Field("", description="goal_reached, gave_up, max_turns, agent_hung_up, call_ended or llm_error")
    reason: str = Field("", description="The caller's own words for why it finished, when it said")

    @property
    def ending_words(self) -> str:
        words = {
            "goal_reached": "the caller reached its goal",
            "gave_up": "the caller gave up",
            "max_turns": f"the caller ran out of turns ({len(self.lines)}) before reaching its goal",
            "agent_hung_up": "the agent hung up before the caller said its goal was reached",
            "call_ended": "the call ended before the caller said its goal was reached",
            "llm_error": "the caller's LLM failed",
        }.get(self.ending, self.ending or "the caller did not finish")
        return words + (f": {self.reason}" if self.reason else "")


class ScenarioResult(BaseModel):
    """One scenario's call and its verdict."""

    name: str
    passed: bool
    duration_s: float
    call_id: str | None = None
    outcome: str = ""
    greeting: str = ""
    ended_by: str | None = None
    steps: list[StepView] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list, description="Checks of the whole call")
    recording: str | None = Field(None, description="The caller's stereo WAV (caller left, agent right)")
    caller: CallerView | None = Field(None, description="The simulated caller, for a scenario with one")
    error: str | None = None

    def failures(self) -> list[str]:
        """Every failed check, prefixed with its step: the lines a person reads first."""
        lines = [f"{c.what}: {c.detail}" for c in self.checks if not c.passed]
        for step in self.steps:
            lines += [f"step {step.index + 1} ({step.label}): {c.what}: {c.detail}" for c in step.checks if not c.passed]
        if self.error:
            lines.insert(0, self.error)
        return lines


class SuiteResult(BaseModel):
    """A whole run: every scenario's result, the wall time and where it ran."""

    suite: str
    url: str
    wall_s: float
    parallel: int
    scenarios: list[ScenarioResult]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scenarios)

    @property
    def failed(self) -> list[ScenarioResult]:
        return [s for s in self.scenarios if not s.passed]
