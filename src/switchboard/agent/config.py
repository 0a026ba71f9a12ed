"""The agent config file (YAML): greeting, intents, keypad menu, call limits, validated with pydantic.

Call-control fields all have production defaults, so a config that names none of them still
re-prompts a silent caller, hangs up after a while and caps the call's length.
"""

from __future__ import annotations

import re
import stat
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from switchboard.agent.sentences import split_sentences
from switchboard.errors import ConfigError
from switchboard.privacy.config import RedactionConfig

DTMF_DIGITS = "0123456789*#"

# Size limits: a real agent is a few kilobytes (the example receptionist: 4 KB, 2,600 characters
# of speech). Every fixed line is synthesised when a worker starts (Piper's prewarm), and Piper's
# memory grows with the length of one sentence: measured, a 2,000-character sentence peaks at
# 3 GB and 72 s of CPU, 250 characters at 0.5 GB (a 10 MB greeting once ran a worker out of
# memory). So a sentence, a line and all the lines together are bounded, and the file is refused
# by its size before it is parsed.
MAX_AGENT_CONFIG_BYTES = 128 * 1024  # parsing it costs at most ~1 s of CPU
MAX_NESTING = 100  # [ and { deep: PyYAML's pure-Python scanner is quadratic in it
MAX_SENTENCE_CHARS = 300  # about 17 s of speech
MAX_SPOKEN_CHARS = 1_000  # one line (greeting, a reply, a re-prompt...): about a minute
MAX_FIXED_SPEECH_CHARS = 20_000  # every fixed line together, all synthesised at start-up
MAX_PROMPT_CHARS = 20_000  # the LLM system prompt
MAX_NAME_CHARS = 200  # the agent's name (outbound calls name it, up to 200 characters too)
MAX_IDENTIFIER_CHARS = 64  # intent, tool and argument names
MAX_INTENTS = 200
MAX_PHRASES_PER_INTENT = 100
MAX_PHRASE_CHARS = 200
MAX_TOOLS = 32
MAX_TOOL_DESCRIPTION_CHARS = 1_000
MAX_TOOL_SCHEMA_CHARS = 16_000  # a tool's parameters (JSON schema), measured as JSON
MAX_TOOL_ARGUMENTS = 32
MAX_ARGUMENT_CHARS = 500
MAX_URL_CHARS = 2_000
MAX_TRANSFER_TARGET_CHARS = 256
MAX_SECRET_CHARS = 512
MAX_NUMBERS = 1_000  # dialed numbers one agent answers
MAX_LIVEKIT_CLAIMS = 100  # trunks, and room patterns
MAX_SUCCESS_CRITERIA = 20
MAX_CRITERION_CHARS = 500
_MAX_REPORTED_PROBLEMS = 8  # a file wrong everywhere still gives a readable message



def fits_spoken_limits(line: str) -> bool:
    """Whether a line filled in during a call (a tool's answer) is within a spoken line's limits."""
    return 0 < len(line) <= MAX_SPOKEN_CHARS and _longest_sentence(line) <= MAX_SENTENCE_CHARS


def _longest_sentence(line: str) -> int:
    return max((len(s) for s in split_sentences(line)), default=0)


def _sentences_within_limit(line: str) -> str:
    longest = _longest_sentence(line)
    if longest > MAX_SENTENCE_CHARS:
        raise ValueError(
            f"has a sentence of {longest} characters; at most {MAX_SENTENCE_CHARS} "
            "(end sentences with . ! or ?)"
        )
    return line


SpokenLine = Annotated[
    str, Field(min_length=1, max_length=MAX_SPOKEN_CHARS), AfterValidator(_sentences_within_limit)
]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_IDENTIFIER_CHARS)]
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
        raise ValueError(f"{rule}, not {', '.join(_quoted(v) for v in bad[:5])}")
    return values


def _quoted(value: str, limit: int = 40) -> str:
    """A value for an error message: on one line, and short even if the value is not."""
    if value.isprintable() and len(value) <= limit:
        return value
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _plain_placeholders(template: str) -> set[str]:
    """The ``{name}`` fields of a template; a format spec, conversion, attribute or index is
    refused (``{digits:>999999999}`` would build a gigabyte string on every call)."""
    try:
        fields = [(n, spec, conv) for _, n, spec, conv in string.Formatter().parse(template) if n is not None]
    except ValueError as e:
        raise ValueError(f"not a valid template ({e})") from None
    bad = [n for n, spec, conv in fields if spec or conv or not n.isidentifier()]
    if bad:
        raise ValueError(f"placeholders are plain {{name}}s, not {', '.join(_quoted(b) for b in bad)}")
    return {n for n, _, _ in fields}


def _json_size_within(value: Any, limit: int) -> bool:
    """Whether ``value`` written as JSON stays within ``limit`` characters; counts node by node
    and stops at the limit, so a YAML alias bomb costs at most ``limit`` steps."""
    budget = limit
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            budget -= 2 + 2 * len(node)
            for key, item in node.items():
                budget -= len(str(key)) + 2
                pending.append(item)
        elif isinstance(node, list):
            budget -= 2 + len(node)
            pending.extend(node)
        else:
            budget -= len(str(node)) + 2
        if budget < 0:
            return False
    return True


def valid_transfer_target(target: str) -> bool:
    """A phone number in E.164 form or a ``sip:user@host`` URI."""
    return bool(_TRANSFER_TARGET.match(target))


class DigitCollection(BaseModel):
    """After the intent's reply, read a string of keypad digits (an account number)."""

    model_config = ConfigDict(extra="forbid")

    max_digits: int = Field(12, ge=1, le=64)
    terminator: Literal["#", "*"] | None = "#"
    timeout_secs: float = Field(8.0, gt=0, le=120, description="Since the last key (or the prompt)")
    reply: SpokenLine = Field(
        "Thank you. I have {digits}.",
        description="Spoken once collected; {digits} is read out digit by digit",
    )
    no_input: SpokenLine = "Sorry, I didn't get any digits."
    pii: bool = Field(
        True, description="The digits are PII: redacted from the stored call when redaction is on"
    )

    @field_validator("reply")
    @classmethod
    def _only_digits_placeholder(cls, reply: str) -> str:
        others = sorted(_plain_placeholders(reply) - {"digits"})
        if others:
            raise ValueError(f"only the {{digits}} placeholder is allowed, not {', '.join(others)}")
        return reply


class Tool(BaseModel):
    """An HTTP webhook the agent may call mid-call (JSON in, JSON object out)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = Field(
        min_length=1, max_length=MAX_TOOL_DESCRIPTION_CHARS, description="What it does, for an LLM"
    )
    url: str = Field(
        pattern=r"^https?://",
        max_length=MAX_URL_CHARS,
        description="POSTed {tool, call_id, arguments} as JSON",
    )
    parameters: dict = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments",
    )
    timeout_secs: float = Field(5.0, gt=0, le=30)
    filler: SpokenLine | None = Field(
        "One moment while I check that.",
        description="Said if the tool is slower than filler_after_secs",
    )
    filler_after_secs: float = Field(1.0, ge=0)
    failure: SpokenLine = Field(
        "Sorry, I couldn't look that up right now.",
        description="Said when the tool times out, fails or returns something that is not a JSON object",
    )

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, schema: dict) -> dict:
        if not _json_size_within(schema, MAX_TOOL_SCHEMA_CHARS):
            raise ValueError(f"the schema is over {MAX_TOOL_SCHEMA_CHARS} characters as JSON")
        if schema.get("type") != "object" or not isinstance(schema.get("properties", {}), dict):
            raise ValueError("must be a JSON schema with type: object and a properties mapping")
        return schema


class Intent(BaseModel):
    """Something the caller may ask for, recognised by phrases (or a keypad key), answered with a reply."""

    model_config = ConfigDict(extra="forbid")

    name: Identifier = Field(pattern=r"^[a-z0-9_\-]+$")
    phrases: list[Annotated[str, Field(max_length=MAX_PHRASE_CHARS)]] = Field(
        min_length=1, max_length=MAX_PHRASES_PER_INTENT
    )
    reply: SpokenLine
    end_call: bool = False
    transfer: str | None = Field(
        None,
        max_length=MAX_TRANSFER_TARGET_CHARS,
        description="After the reply, connect the caller here: +E.164 number or sip: URI",
    )
    transfer_mode: Literal["cold", "warm"] = Field(
        "cold",
        description="cold: redirect the caller at once; warm: call the person first, tell them "
        "transfer_summary, and bridge the caller only if they answer",
    )
    transfer_summary: SpokenLine = Field(
        "You have a caller who asked for {intent}. Connecting you now.",
        description="Warm transfers: said to the person before the caller joins; {intent} is filled in",
    )
    collect_digits: DigitCollection | None = None
    tool: Identifier | None = Field(
        None, description="After the reply, call this tool (a name in tools)"
    )
    arguments: dict[Identifier, Annotated[str, Field(max_length=MAX_ARGUMENT_CHARS)]] = Field(
        default_factory=dict,
        max_length=MAX_TOOL_ARGUMENTS,
        description="The tool's arguments; {digits} is the last digit string",
    )
    answer: SpokenLine | None = Field(
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

    @field_validator("answer")
    @classmethod
    def _answer_template(cls, answer: str | None) -> str | None:
        if answer is not None:
            _plain_placeholders(answer)
        return answer

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

    options: dict[str, Identifier] = Field(min_length=1, description="digit -> intent name")
    invalid: SpokenLine = "Sorry, that is not one of the options."

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
    reprompt: SpokenLine = "Are you still there?"
    max_reprompts: int = Field(2, ge=0, le=10, description="Re-prompts before saying goodbye")
    goodbye: SpokenLine = "I haven't heard anything for a while, so I'll end the call now. Goodbye."


class CallLimits(BaseModel):
    """The longest a call may run, and the line that closes it."""

    model_config = ConfigDict(extra="forbid")

    max_duration_secs: float = Field(900.0, gt=0, le=4 * 3600)
    closing: SpokenLine = (
        "We have reached the time limit for this call. Thank you for calling, goodbye."
    )


class RecordingConfig(BaseModel):
    """Opt-in call recording: both sides, stored with the call record."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    disclosure: SpokenLine | None = Field(
        None, description="Spoken before the greeting when recording is enabled."
    )


class NoiseSuppressionConfig(BaseModel):
    """RNNoise on the caller's audio, before the VAD and the STT (:mod:`switchboard.engines.noise_filter`).

    Off by default: measured in real street and crowd noise (docs/performance.md, "Noise
    suppression"), it raises Whisper's word errors, lets background talkers start the
    VAD more often, and costs 7-11 % of a core per call.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    attenuation_limit_db: float | None = Field(
        None,
        ge=3.0,
        le=60.0,
        description="The most the background is lowered, in dB (the rest of the unfiltered "
        "signal is mixed back in); null lets RNNoise remove all it can.",
    )


class WebhookConfig(BaseModel):
    """Where the finished call's record is POSTed, signed with ``secret`` (HMAC-SHA256)."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    secret: SecretStr = Field(min_length=16, max_length=MAX_SECRET_CHARS)


class CallAnalysisConfig(BaseModel):
    """After the call, ask the configured LLM for a summary and a verdict on these criteria."""

    model_config = ConfigDict(extra="forbid")

    summary: bool = True
    success_criteria: list[Annotated[str, Field(max_length=MAX_CRITERION_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_SUCCESS_CRITERIA,
        description="What a successful call achieved, one criterion each.",
    )


# What a caller the pool cannot admit hears (switchboard.orchestrator.overflow), per agent.
BUSY_LINE = "Sorry, all of our agents are busy right now. Please call again in a few minutes. Goodbye."


class BusyOverflow(BaseModel):
    """Say the busy line and hang up."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["busy"]
    line: SpokenLine = BUSY_LINE


class TransferOverflow(BaseModel):
    """Put the caller through to people: a number (E.164) or a SIP URI."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["transfer"]
    to: str = Field(max_length=MAX_TRANSFER_TARGET_CHARS)
    line: SpokenLine = "All of our agents are busy, so I'm putting you through to a colleague."

    @field_validator("to")
    @classmethod
    def _target(cls, target: str) -> str:
        if not valid_transfer_target(target):
            raise ValueError(f"a number in E.164 form (+15551234567) or a sip: URI, not {_quoted(target)}")
        return target


FinalOverflow = Annotated[BusyOverflow | TransferOverflow, Field(discriminator="action")]


class QueueOverflow(BaseModel):
    """Hold the caller (a line, then hold audio) until headroom frees, first come first served;
    after ``max_wait_secs`` the ``then`` action."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["queue"]
    line: SpokenLine = "All of our agents are busy right now. Please hold, and you will be connected in turn."
    max_wait_secs: float | None = Field(
        None, gt=0, le=3600, validate_default=True,
        description="Required: the longest a caller holds before the `then` action",
    )
    announce_position: bool = Field(True, description="Tell the caller their place in line as it changes")
    hold_audio_url: AnyHttpUrl | None = Field(
        None, description="Audio Twilio plays while the caller holds (default: the orchestrator's own tone)"
    )
    then: FinalOverflow = Field(default_factory=lambda: BusyOverflow(action="busy"))

    @field_validator("max_wait_secs")
    @classmethod
    def _bounded(cls, value: float | None) -> float:
        if value is None:
            raise ValueError("a hold queue needs a maximum wait (seconds), after which `then` is done")
        return value


Overflow = Annotated[QueueOverflow | TransferOverflow | BusyOverflow, Field(discriminator="action")]


class AgentConfig(BaseModel):
    """A scripted agent; ``llm`` engines may later use ``system_prompt`` instead of intents."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    greeting: SpokenLine
    fallback: SpokenLine
    intents: list[Intent] = Field(default_factory=list, max_length=MAX_INTENTS)
    system_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    keypad: Keypad | None = None
    silence: Silence = Field(default_factory=Silence)
    limits: CallLimits = Field(default_factory=CallLimits)
    transfer_failed: SpokenLine = (
        "Sorry, I couldn't put you through right now. Is there anything else I can help with?"
    )
    tools: list[Tool] = Field(default_factory=list, max_length=MAX_TOOLS)
    transfer_unanswered: SpokenLine = Field(
        "Sorry, nobody is available to take your call right now. Is there anything else I can help with?",
        description="Said when the person a transfer rings is busy or does not answer (warm "
        "transfers; cold ones where the carrier reports it, as LiveKit SIP does); the call goes on",
    )
    resumed: SpokenLine = Field(
        "Sorry, I lost you for a moment there. Could you say that again?",
        description="Said when a call is carried on by another worker after its own was lost",
    )
    numbers: list[str] = Field(
        default_factory=list,
        max_length=MAX_NUMBERS,
        description="Dialed numbers (E.164) this agent answers, in an agents dir",
    )
    livekit_trunks: list[str] = Field(
        default_factory=list,
        max_length=MAX_LIVEKIT_CLAIMS,
        description="LiveKit SIP trunks (ST_...) whose calls this agent answers, in an agents dir",
    )
    livekit_rooms: list[str] = Field(
        default_factory=list,
        max_length=MAX_LIVEKIT_CLAIMS,
        description="LiveKit room-name patterns (call-sales-*) this agent answers, in an agents dir",
    )
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    noise_suppression: NoiseSuppressionConfig = Field(default_factory=NoiseSuppressionConfig)
    overflow: Overflow = Field(
        default_factory=lambda: BusyOverflow(action="busy"),
        description="What a caller hears when the pool has no headroom for the call: queue, transfer or busy",
    )
    webhook: WebhookConfig | None = None
    analysis: CallAnalysisConfig | None = None
    redaction: RedactionConfig = Field(default_factory=RedactionConfig)

    @model_validator(mode="after")
    def _fixed_speech_within_budget(self) -> AgentConfig:
        total = sum(len(line) for line in self.fixed_utterances())
        if total > MAX_FIXED_SPEECH_CHARS:
            raise ValueError(
                f"the agent's fixed lines (greeting, replies, re-prompts...) are {total} characters "
                f"together, over the {MAX_FIXED_SPEECH_CHARS} a worker synthesises at start-up"
            )
        return self

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
    """Read and validate an agent config; every failure is a one-line ConfigError naming the
    file and the field (never a traceback): the CLI prints it and an agents dir reports it."""
    path = Path(path)
    text = _read_text(path)
    if _flow_nesting(text) > MAX_NESTING:
        raise ConfigError(f"agent config {path}: not valid YAML: nested over {MAX_NESTING} levels deep")
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"agent config {path}: not valid YAML: {_yaml_problem(e)}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"agent config {path}: not valid YAML: {_one_line(str(e))}") from e
    except RecursionError as e:
        raise ConfigError(f"agent config {path}: not valid YAML: nested too deeply") from e
    except ValueError as e:  # a value YAML types but Python refuses: 2026-13-45, a 5000-digit int
        raise ConfigError(f"agent config {path}: not valid YAML: {_one_line(str(e))}") from e
    if not isinstance(raw, dict):
        found = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"agent config {path}: expected a mapping at the top level, not {found}")
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as e:
        problems = _problems(e)
    # Raised out here, not chained: the ValidationError keeps its inputs, and printing it (as a
    # traceback would) expands a YAML alias bomb; the message already names every field.
    raise ConfigError(f"agent config {path}: {problems}")


def _read_text(path: Path) -> str:
    """The file's text, refused by its size before it is read and parsed."""
    try:
        found = path.stat()
        if stat.S_ISDIR(found.st_mode):
            raise ConfigError(f"agent config {path}: is a directory, not a YAML file")
        if not stat.S_ISREG(found.st_mode):  # a FIFO or a device would block or never end
            raise ConfigError(f"agent config {path}: not a regular file")
        if found.st_size > MAX_AGENT_CONFIG_BYTES:
            raise _too_large(path)
        with path.open("rb") as f:
            data = f.read(MAX_AGENT_CONFIG_BYTES + 1)  # it may have grown since
    except FileNotFoundError as e:
        raise ConfigError(f"agent config {path}: file not found") from e
    except PermissionError as e:
        raise ConfigError(f"agent config {path}: permission denied") from e
    except OSError as e:
        raise ConfigError(f"agent config {path}: cannot be read ({e.strerror or e})") from e
    if len(data) > MAX_AGENT_CONFIG_BYTES:
        raise _too_large(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"agent config {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from e


def _too_large(path: Path) -> ConfigError:
    return ConfigError(
        f"agent config {path}: file is over {MAX_AGENT_CONFIG_BYTES // 1024} KiB; "
        "an agent config is a few kilobytes"
    )


# libyaml's parser when PyYAML has it (as its wheels do): ten times faster on a large file.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _flow_nesting(text: str) -> int:
    """How deep ``[`` and ``{`` nest (counting those in strings too: an upper bound)."""
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", text):
        depth = depth + 1 if bracket in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def _problems(error: ValidationError) -> str:
    """One ``field: problem`` per error, joined on one line; the first few if there are many."""
    errors = error.errors(include_input=False, include_url=False)
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {_one_line(err['msg'])}"
        for err in errors[:_MAX_REPORTED_PROBLEMS]
    ]
    if len(errors) > _MAX_REPORTED_PROBLEMS:
        problems.append(f"and {len(errors) - _MAX_REPORTED_PROBLEMS} more")
    return "; ".join(problems)


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    where = error.problem_mark
    at = f"line {where.line + 1}, column {where.column + 1}: " if where is not None else ""
    return at + _one_line(error.problem or error.context or "syntax error")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
