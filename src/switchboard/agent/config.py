"""The agent config file (YAML): greeting, intents, keypad menu, call limits, validated with pydantic.

Call-control fields all have production defaults, so a config that names none of them still
re-prompts a silent caller, hangs up after a while and caps the call's length.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from switchboard.errors import ConfigError

DTMF_DIGITS = "0123456789*#"
# E.164 (+ and 8-15 digits) or a SIP URI; what Twilio's <Dial> and LiveKit's transfer accept.
_TRANSFER_TARGET = re.compile(
    r"^(\+[1-9][0-9]{7,14}|sips?:[^\s@<>\"]+@[A-Za-z0-9.\-]+(:[0-9]{1,5})?)$"
)


_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_TRUNK_ID = re.compile(r"ST_[A-Za-z0-9]{1,64}")
_ROOM_PATTERN = re.compile(r"call-[A-Za-z0-9_+\-*?]{1,120}")  # as livekit.ROOM_PATTERN

# What an agent may send to a remote IVR: keypad digits, and w for a half-second pause.
DIAL_STRING_PATTERN = r"^[0-9*#w]{1,64}$"
_DIAL_STRING = re.compile(DIAL_STRING_PATTERN)


def valid_dial_string(digits: str) -> bool:
    """1-64 of 0-9, * and #, with ``w`` for a half-second pause ("1w234#")."""
    return bool(_DIAL_STRING.match(digits))


def _all_match(values: list[str], pattern: re.Pattern[str], rule: str) -> list[str]:
    """``values`` if each matches ``pattern`` whole; else the rule and the values breaking it."""
    bad = [v for v in values if not pattern.fullmatch(v)]
    if bad:
        raise ValueError(f"{rule}, not {', '.join(bad)}")
    return values


def valid_transfer_target(target: str) -> bool:
    """A phone number in E.164 form or a ``sip:user@host`` URI."""
    return bool(_TRANSFER_TARGET.match(target))


class DigitCollection(BaseModel):
    """After the intent's reply, read a string of keypad digits (an account number)."""

    model_config = ConfigDict(extra="forbid")

    max_digits: int = Field(12, ge=1, le=64)
    terminator: Literal["#", "*"] | None = "#"
    timeout_secs: float = Field(8.0, gt=0, le=120, description="Since the last key (or the prompt)")
    reply: str = Field(
        "Thank you. I have {digits}.",
        min_length=1,
        description="Spoken once collected; {digits} is read out digit by digit",
    )
    no_input: str = Field("Sorry, I didn't get any digits.", min_length=1)

    @field_validator("reply")
    @classmethod
    def _only_digits_placeholder(cls, reply: str) -> str:
        try:
            reply.format(digits="1")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only the {{digits}} placeholder is allowed ({e})") from None
        return reply


class Tool(BaseModel):
    """An HTTP webhook the agent may call mid-call (JSON in, JSON object out)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = Field(min_length=1, description="What it does, for an LLM")
    url: str = Field(pattern=r"^https?://", description="POSTed {tool, call_id, arguments} as JSON")
    parameters: dict = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments",
    )
    timeout_secs: float = Field(5.0, gt=0, le=30)
    filler: str | None = Field(
        "One moment while I check that.",
        description="Said if the tool is slower than filler_after_secs",
    )
    filler_after_secs: float = Field(1.0, ge=0)
    failure: str = Field(
        "Sorry, I couldn't look that up right now.",
        min_length=1,
        description="Said when the tool times out, fails or returns something that is not a JSON object",
    )

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, schema: dict) -> dict:
        if schema.get("type") != "object" or not isinstance(schema.get("properties", {}), dict):
            raise ValueError("must be a JSON schema with type: object and a properties mapping")
        return schema


class Intent(BaseModel):
    """Something the caller may ask for, recognised by phrases (or a keypad key), answered with a reply."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[a-z0-9_\-]+$")
    phrases: list[str] = Field(min_length=1)
    reply: str = Field(min_length=1)
    end_call: bool = False
    transfer: str | None = Field(
        None, description="After the reply, connect the caller here: +E.164 number or sip: URI"
    )
    transfer_mode: Literal["cold", "warm"] = Field(
        "cold",
        description="cold: redirect the caller at once; warm: call the person first, tell them "
        "transfer_summary, and bridge the caller only if they answer",
    )
    transfer_summary: str = Field(
        "You have a caller who asked for {intent}. Connecting you now.",
        min_length=1,
        description="Warm transfers: said to the person before the caller joins; {intent} is filled in",
    )
    collect_digits: DigitCollection | None = None
    tool: str | None = Field(None, description="After the reply, call this tool (a name in tools)")
    arguments: dict[str, str] = Field(
        default_factory=dict, description="The tool's arguments; {digits} is the last digit string"
    )
    answer: str | None = Field(
        None, description="Said with the tool's result: {field} is a top-level field of its JSON"
    )
    send_digits: str | None = Field(
        None,
        description="After the reply, play these keypad tones to the far end (a remote IVR): "
        "0-9, * and #, w for a half-second pause",
    )

    @field_validator("transfer")
    @classmethod
    def _transfer_target(cls, target: str | None) -> str | None:
        if target is not None and not valid_transfer_target(target):
            raise ValueError(f"{target!r} is neither an E.164 number (+15551234567) nor a sip: URI")
        return target

    @field_validator("send_digits")
    @classmethod
    def _dial_string(cls, digits: str | None) -> str | None:
        if digits is not None and not valid_dial_string(digits):
            raise ValueError(
                f"{digits!r} is not a dial string: 1-64 of 0-9, * and #, w for a pause"
            )
        return digits

    @model_validator(mode="after")
    def _one_ending(self) -> Intent:
        follow_ups = [
            f
            for f in ("end_call", "transfer", "collect_digits", "tool", "send_digits")
            if getattr(self, f)
        ]
        if self.end_call and self.transfer:
            raise ValueError("an intent either ends the call or transfers it, not both")
        if len(follow_ups) > 1:
            raise ValueError(f"an intent has one follow-up, not {' and '.join(follow_ups)}")
        if self.answer and not self.tool:
            raise ValueError("answer is the template of a tool's result: set tool too")
        return self

    @field_validator("phrases")
    @classmethod
    def _phrases_not_blank(cls, phrases: list[str]) -> list[str]:
        cleaned = [p.strip() for p in phrases]
        if any(not p for p in cleaned):
            raise ValueError("phrases must not be blank")
        return cleaned


class Keypad(BaseModel):
    """A keypad menu: a pressed digit answers as its intent would."""

    model_config = ConfigDict(extra="forbid")

    options: dict[str, str] = Field(min_length=1, description="digit -> intent name")
    invalid: str = Field("Sorry, that is not one of the options.", min_length=1)

    @field_validator("options")
    @classmethod
    def _digits(cls, options: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in options if len(k) != 1 or k not in DTMF_DIGITS)
        if bad:
            raise ValueError(
                f"keys must be single keypad digits (0-9, * or #), not {', '.join(bad)}"
            )
        return options


class Silence(BaseModel):
    """What the agent does when the caller says nothing while the agent is quiet."""

    model_config = ConfigDict(extra="forbid")

    reprompt_after_secs: float = Field(10.0, gt=0, le=600)
    reprompt: str = Field("Are you still there?", min_length=1)
    max_reprompts: int = Field(2, ge=0, le=10, description="Re-prompts before saying goodbye")
    goodbye: str = Field(
        "I haven't heard anything for a while, so I'll end the call now. Goodbye.", min_length=1
    )


class CallLimits(BaseModel):
    """The longest a call may run, and the line that closes it."""

    model_config = ConfigDict(extra="forbid")

    max_duration_secs: float = Field(900.0, gt=0, le=4 * 3600)
    closing: str = Field(
        "We have reached the time limit for this call. Thank you for calling, goodbye.",
        min_length=1,
    )


class RecordingConfig(BaseModel):
    """Opt-in call recording: both sides, stored with the call record."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    disclosure: str | None = Field(
        None, min_length=1, description="Spoken before the greeting when recording is enabled."
    )


class WebhookConfig(BaseModel):
    """Where the finished call's record is POSTed, signed with ``secret`` (HMAC-SHA256)."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    secret: SecretStr = Field(min_length=16)


class CallAnalysisConfig(BaseModel):
    """After the call, ask the configured LLM for a summary and a verdict on these criteria."""

    model_config = ConfigDict(extra="forbid")

    summary: bool = True
    success_criteria: list[str] = Field(
        default_factory=list, description="What a successful call achieved, one criterion each."
    )


class AgentConfig(BaseModel):
    """A scripted agent; ``llm`` engines may later use ``system_prompt`` instead of intents."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    greeting: str = Field(min_length=1)
    fallback: str = Field(min_length=1)
    intents: list[Intent] = Field(default_factory=list)
    system_prompt: str | None = None
    keypad: Keypad | None = None
    silence: Silence = Field(default_factory=Silence)
    limits: CallLimits = Field(default_factory=CallLimits)
    transfer_failed: str = Field(
        "Sorry, I couldn't put you through right now. Is there anything else I can help with?",
        min_length=1,
    )
    tools: list[Tool] = Field(default_factory=list)
    transfer_unanswered: str = Field(
        "Sorry, nobody is available to take your call right now. Is there anything else I can help with?",
        min_length=1,
        description="Said when nobody answers a warm transfer; the call goes on with the agent",
    )
    resumed: str = Field(
        "Sorry, I lost you for a moment there. Could you say that again?",
        min_length=1,
        description="Said when a call is carried on by another worker after its own was lost",
    )
    numbers: list[str] = Field(
        default_factory=list,
        description="Dialed numbers (E.164) this agent answers, in an agents dir",
    )
    livekit_trunks: list[str] = Field(
        default_factory=list,
        description="LiveKit SIP trunks (ST_...) whose calls this agent answers, in an agents dir",
    )
    livekit_rooms: list[str] = Field(
        default_factory=list,
        description="LiveKit room-name patterns (call-sales-*) this agent answers, in an agents dir",
    )
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    webhook: WebhookConfig | None = None
    analysis: CallAnalysisConfig | None = None

    @model_validator(mode="after")
    def _unique_intent_names(self) -> AgentConfig:
        names = [i.name for i in self.intents]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"intent names must be unique, repeated: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _tools_exist(self) -> AgentConfig:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        missing = sorted({i.tool for i in self.intents if i.tool and i.tool not in names})
        if missing:
            raise ValueError(f"intents name unknown tools: {', '.join(missing)}")
        return self

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    @model_validator(mode="after")
    def _keypad_intents_exist(self) -> AgentConfig:
        if self.keypad is not None:
            names = {i.name for i in self.intents}
            missing = sorted({n for n in self.keypad.options.values() if n not in names})
            if missing:
                raise ValueError(f"keypad.options name unknown intents: {', '.join(missing)}")
        return self

    @field_validator("numbers")
    @classmethod
    def _e164(cls, numbers: list[str]) -> list[str]:
        return _all_match(numbers, _E164, "numbers must be E.164 (+15551234567)")

    @field_validator("livekit_trunks")
    @classmethod
    def _trunk_ids(cls, trunks: list[str]) -> list[str]:
        return _all_match(trunks, _TRUNK_ID, "LiveKit trunk ids look like ST_abc123")

    @field_validator("livekit_rooms")
    @classmethod
    def _room_patterns(cls, patterns: list[str]) -> list[str]:
        # Only call-* rooms get an agent, so any other pattern could never match.
        return _all_match(
            patterns,
            _ROOM_PATTERN,
            "room patterns start with call- and use letters, digits, _ + - and the wildcards * ?",
        )

    def intent(self, name: str) -> Intent | None:
        return next((i for i in self.intents if i.name == name), None)

    def fixed_utterances(self) -> list[str]:
        """Everything a scripted agent can say, for warming the TTS cache."""
        lines = [self.opening(), self.resumed, self.fallback, *(i.reply for i in self.intents)]
        lines += [
            self.transfer_unanswered,
            self.silence.reprompt,
            self.silence.goodbye,
            self.limits.closing,
            self.transfer_failed,
        ]
        if self.keypad is not None:
            lines.append(self.keypad.invalid)
        lines += [line for t in self.tools for line in (t.filler, t.failure) if line]
        return lines

    def opening(self) -> str:
        """What the agent says first: the recording disclosure (if recording), then the greeting."""
        if self.recording.enabled and self.recording.disclosure:
            return f"{self.recording.disclosure} {self.greeting}"
        return self.greeting


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent config, raising ConfigError that names the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"agent config {path}: file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"agent config {path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"agent config {path}: expected a mapping at the top level")
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"agent config {path}: {problems}") from e
