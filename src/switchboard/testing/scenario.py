"""The scenario suite format: what a simulated caller does and what the agent must do in reply.

A suite is a YAML file (or a folder of them) of scenarios; a scenario is one call seen from the
caller's side: steps (say a line, play a clip, press keys, stay silent), each with what the
agent's reply must show, or a simulated caller (an LLM given a persona and a goal, writing the
caller's lines as the call goes), and expectations about the whole call. Validation errors name the
file, the scenario and the field (``receptionist.yaml: scenarios[3] (hours).steps[0].say``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchboard.errors import ConfigError

EndedBy = Literal["agent", "caller", "idle", "max_duration", "transfer", "worker", "error"]
Voice = Literal["caller", "espeak"]
MAX_SCENARIOS = 500
MAX_STEPS = 50
MAX_LINE_CHARS = 500
MAX_CALLER_TURNS = 30
MAX_PERSONA_CHARS = 2_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolExpect(_Strict):
    """A tool the agent must call; ``arguments`` must be among those it sent (equal values)."""

    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, str | int | float | bool] = Field(default_factory=dict)


class ReplyExpect(_Strict):
    """What must hold for the agent's answer to one step (every field optional)."""

    intent: str | None = Field(None, description="The intent that answered (the agent's own name for it)")
    tool: ToolExpect | None = None
    says: list[str] = Field(
        default_factory=list, description="Words or phrases the reply contains (case-insensitive)"
    )
    matches: str | None = Field(None, description="A regular expression the reply matches (case-insensitive)")
    judged: str | None = Field(
        None, max_length=MAX_LINE_CHARS, description="A criterion an LLM judge decides from the reply"
    )
    transfer: str | None = Field(None, description="The agent transfers the caller to this target")
    digits: str | None = Field(None, pattern=r"^[0-9*#]*$", description="The digits the agent collected")
    max_latency_ms: int | None = Field(
        None, gt=0, description="Voice-to-voice budget: caller's end of speech to the reply heard"
    )

    @field_validator("matches")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from e
        return value

    @field_validator("says", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Step(_Strict):
    """One thing the caller does: exactly one of ``say``, ``audio``, ``press``, ``silence_secs``."""

    say: str | None = Field(None, min_length=1, max_length=MAX_LINE_CHARS, description="A line the caller's voice speaks")
    audio: Path | None = Field(None, description="A WAV clip the caller plays (relative to the suite file)")
    press: str | None = Field(None, pattern=r"^[0-9*#]{1,32}$", description="Keypad keys pressed")
    silence_secs: float | None = Field(
        None, gt=0, le=120, description="Stay silent this long at most, waiting for the agent to speak"
    )
    pause_ms: int = Field(600, ge=0, le=30_000, description="Quiet after the agent's reply, before this step")
    barge_in_after_ms: int | None = Field(
        None, ge=0, le=30_000, description="Speak this long after the agent's reply began, over it"
    )
    expect: ReplyExpect = Field(default_factory=ReplyExpect)

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [k for k in ("say", "audio", "press", "silence_secs") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of say, audio, press, silence_secs" + (f" (got {', '.join(given)})" if given else "")
            )
        if self.barge_in_after_ms is not None and self.silence_secs is not None:
            raise ValueError("barge_in_after_ms: a silent step cannot talk over the agent")
        return self

    @property
    def label(self) -> str:
        if self.say is not None:
            return f'says "{self.say}"'
        if self.audio is not None:
            return f"plays {self.audio.name}"
        if self.press is not None:
            return f"presses {self.press}"
        return f"stays silent ({self.silence_secs:g} s)"


class SimulatedCaller(_Strict):
    """A caller whose lines an LLM writes turn by turn from a persona, a goal and what it heard."""

    persona: str = Field(min_length=1, max_length=MAX_PERSONA_CHARS, description="Who is calling, and how they talk")
    goal: str = Field(min_length=1, max_length=MAX_LINE_CHARS, description="What they called to get done")
    max_turns: int = Field(
        8, ge=1, le=MAX_CALLER_TURNS, description="The caller hangs up after this many lines, goal reached or not"
    )
    opening: str | None = Field(
        None, min_length=1, max_length=MAX_LINE_CHARS, description="The first line, said as written (no LLM)"
    )
    pause_ms: int = Field(300, ge=0, le=30_000, description="Quiet after the agent's reply and the caller thinking")

    @field_validator("persona", "goal", "opening")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is blank")
        return value


class CallExpect(_Strict):
    """What must hold for the whole call."""

    intents: list[str] | None = Field(None, description="Every intent that answered, in order")
    ended_by: EndedBy | None = None
    transfer: str | None = None
    digits: str | None = Field(None, pattern=r"^[0-9*#]*$")
    tools: list[ToolExpect] = Field(default_factory=list)
    max_latency_ms: int | None = Field(None, gt=0, description="Voice-to-voice budget of every step")
    no_false_barge_in: bool = Field(
        True, description="The agent never stops talking (a `clear`) unless the caller talked over it"
    )
    judged: list[str] = Field(
        default_factory=list, max_length=20, description="Criteria an LLM judge decides from the whole conversation"
    )
    goal_reached: bool | None = Field(
        None, description="The simulated caller says it reached its goal (required by default when there is one)"
    )

    @field_validator("judged", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("judged")
    @classmethod
    def _bounded(cls, value: list[str]) -> list[str]:
        for criterion in value:
            if not criterion.strip() or len(criterion) > MAX_LINE_CHARS:
                raise ValueError(f"a criterion is blank or longer than {MAX_LINE_CHARS} characters")
        return value


class Scenario(_Strict):
    """One call from the caller's side."""

    name: str = Field(min_length=1, max_length=120)
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    to: str | None = Field(None, description="The number dialed (picks the agent where numbers do)")
    voice: Voice | None = None
    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)
    caller: SimulatedCaller | None = Field(None, description="An LLM-simulated caller instead of steps")
    expect: CallExpect = Field(default_factory=CallExpect)
    timeout_secs: float = Field(120, gt=0, le=900, description="The call is failed if it runs longer")
    reply_timeout_ms: int | None = Field(None, gt=0, le=120_000)

    @model_validator(mode="after")
    def _steps_or_caller(self) -> Scenario:
        if self.caller is not None and self.steps:
            raise ValueError("caller: give either steps or a simulated caller, not both")
        if self.caller is None and self.expect.goal_reached is not None:
            raise ValueError("expect.goal_reached: only a simulated caller (caller:) has a goal")
        return self

    @property
    def agent_hangs_up(self) -> bool:
        """The caller waits for the agent to hang up instead of hanging up itself."""
        return self.expect.ended_by not in (None, "caller")


class Defaults(_Strict):
    """Suite-wide settings every scenario inherits (a scenario's own value wins)."""

    to: str = "+15005550001"
    voice: Voice = "caller"
    max_latency_ms: int | None = Field(None, gt=0)
    reply_timeout_ms: int = Field(8_000, gt=0, le=120_000, description="Caller's end of speech to the reply")


class Suite(_Strict):
    """A named list of scenarios and their shared defaults."""

    version: Literal[1] = 1
    name: str = "suite"
    defaults: Defaults = Field(default_factory=Defaults)
    scenarios: list[Scenario] = Field(min_length=1, max_length=MAX_SCENARIOS)
    source: Path | None = Field(None, exclude=True, description="The file it was read from")

    @model_validator(mode="after")
    def _unique_names(self) -> Suite:
        seen: set[str] = set()
        for i, scenario in enumerate(self.scenarios):
            if scenario.name in seen:
                raise ValueError(f"scenarios[{i}].name: {scenario.name!r} is used twice")
            seen.add(scenario.name)
        return self

    def dialing(self, number: str | None) -> Suite:
        """The same scenarios calling ``number`` (another agent, or a changed copy of one)."""
        if not number:
            return self
        return self.model_copy(update={"scenarios": [s.model_copy(update={"to": number}) for s in self.scenarios]})

    def select(self, pattern: str | None) -> Suite:
        """The scenarios whose name or a tag contains ``pattern`` (all without one)."""
        if not pattern:
            return self
        wanted = pattern.lower()
        chosen = [s for s in self.scenarios if wanted in s.name.lower() or any(wanted in t.lower() for t in s.tags)]
        if not chosen:
            raise ConfigError(f"no scenario of {self.name} matches {pattern!r}")
        return self.model_copy(update={"scenarios": chosen})


def _where(loc: tuple[int | str, ...], data: object) -> str:
    """``scenarios[3] (name).steps[0].say`` from a pydantic error location."""
    out, node = "", data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                out += f" ({node['name']})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def parse_suite(text: str, source: Path) -> Suite:
    """Validate a suite's YAML; a ConfigError names the file, the scenario and the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite is a mapping with `scenarios:`")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        problems = [
            f"{_where(err['loc'], data) or '(suite)'}: {err['msg']}"
            for err in e.errors()
            # Pydantic reports a union's failed branches too; the first line of each is enough.
            if not str(err["loc"][-1:]).startswith("('function-")
        ]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from e
    suite.source = source
    d = suite.defaults
    for scenario in suite.scenarios:
        # Each scenario carries its suite's defaults, so a folder's files may differ in them.
        scenario.to = scenario.to or d.to
        scenario.voice = scenario.voice or d.voice
        scenario.reply_timeout_ms = scenario.reply_timeout_ms or d.reply_timeout_ms
        if scenario.expect.max_latency_ms is None:
            scenario.expect.max_latency_ms = d.max_latency_ms
        for step in scenario.steps:
            if step.audio is not None and not step.audio.is_absolute():
                step.audio = (source.parent / step.audio).resolve()
            if step.audio is not None and not step.audio.is_file():
                raise ConfigError(f"{source}: {scenario.name}: audio {step.audio} does not exist")
    return suite


def load_suite(path: Path) -> Suite:
    """A suite file, or every ``*.yaml``/``*.yml`` of a folder as one suite (scenario names must differ)."""
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise ConfigError(f"{path}: no *.yaml suite files")
        suites = [parse_suite(f.read_text(), f) for f in files]
        merged = [s for suite in suites for s in suite.scenarios]
        try:
            return Suite(name=path.name, defaults=suites[0].defaults, scenarios=merged, source=path)
        except ValidationError as e:
            raise ConfigError(f"{path}: {e.errors()[0]['msg']}") from e
    if not path.is_file():
        raise ConfigError(f"{path}: no such suite file or folder")
    return parse_suite(path.read_text(), path)
