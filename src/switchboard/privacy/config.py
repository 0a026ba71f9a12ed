"""``redaction:`` in an agent's YAML: which PII its stored calls never hold."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchboard.privacy.detect import ENTITY_TYPES

Entity = Literal["card", "phone", "email", "national_id", "date_of_birth", "address", "name", "account_number"]
AudioMask = Literal["silence", "tone"]


class RedactionConfig(BaseModel):
    """What is taken out of a call's record, webhook, analysis input, logs and recording."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    entities: list[Entity] = Field(
        default_factory=lambda: list(ENTITY_TYPES),
        max_length=len(ENTITY_TYPES),
        description="PII types redacted (all by default)",
    )
    keypad_digits: bool = Field(
        True,
        description="Keys the caller pressed are PII (an intent's collect_digits.pii: false keeps its digits)",
    )
    llm_sees_pii: bool = Field(
        True,
        description="During the call the LLM reads the caller's words as said (it may need the "
        "patient number); false gives it the redacted text. The stored call never holds them.",
    )
    recording: bool = Field(True, description="Mask PII and keypad tones in the recording's audio")
    audio_mask: AudioMask = Field("silence", description="What replaces a redacted span of audio")

    @field_validator("entities")
    @classmethod
    def _unique(cls, entities: list[str]) -> list[str]:
        repeated = sorted({e for e in entities if entities.count(e) > 1})
        if repeated:
            raise ValueError(f"entity types are listed once each, repeated: {', '.join(repeated)}")
        return entities
