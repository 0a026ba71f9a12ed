"""The agent config file (YAML): greeting, intents, fallback and goodbye, validated with pydantic."""

from __future__ import annotations

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


class Intent(BaseModel):
    """Something the caller may ask for, recognised by phrases, answered with a reply."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[a-z0-9_\-]+$")
    phrases: list[str] = Field(min_length=1)
    reply: str = Field(min_length=1)
    end_call: bool = False

    @field_validator("phrases")
    @classmethod
    def _phrases_not_blank(cls, phrases: list[str]) -> list[str]:
        cleaned = [p.strip() for p in phrases]
        if any(not p for p in cleaned):
            raise ValueError("phrases must not be blank")
        return cleaned


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

    def opening(self) -> str:
        """What the agent says first: the recording disclosure (if recording), then the greeting."""
        if self.recording.enabled and self.recording.disclosure:
            return f"{self.recording.disclosure} {self.greeting}"
        return self.greeting

    def fixed_utterances(self) -> list[str]:
        """Everything a scripted agent can say, for warming the TTS cache."""
        return [self.opening(), self.fallback, *(i.reply for i in self.intents)]


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
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"agent config {path}: {problems}") from e
