"""The agent config's recording and webhook sections."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchboard.agent.config import load_agent_config
from switchboard.errors import ConfigError

BASE = {"version": 1, "name": "a", "greeting": "Hello.", "fallback": "Sorry?"}


def write(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({**BASE, **fields}))
    return path


def test_recording_is_off_unless_enabled_and_its_disclosure_is_spoken_first(tmp_path: Path) -> None:
    plain = load_agent_config(write(tmp_path))
    assert plain.recording.enabled is False and plain.opening() == "Hello."
    quiet = load_agent_config(
        write(tmp_path, recording={"enabled": False, "disclosure": "This call may be recorded."})
    )
    assert quiet.opening() == "Hello."
    recorded = load_agent_config(
        write(tmp_path, recording={"enabled": True, "disclosure": "This call may be recorded."})
    )
    assert recorded.opening() == "This call may be recorded. Hello."
    assert recorded.fixed_utterances()[0] == recorded.opening()  # warmed in the TTS cache


@pytest.mark.parametrize(
    ("webhook", "field"),
    [
        ({"url": "ftp://example.com/hook", "secret": "0123456789abcdef"}, "webhook.url"),
        ({"url": "https://example.com/hook", "secret": "short"}, "webhook.secret"),
        ({"url": "https://example.com/hook"}, "webhook.secret"),
        (
            {"url": "https://example.com/hook", "secret": "0123456789abcdef", "retries": 3},
            "webhook.retries",
        ),
    ],
)
def test_a_bad_webhook_section_is_refused_naming_the_field(
    tmp_path: Path, webhook: dict, field: str
) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_agent_config(write(tmp_path, webhook=webhook))


def test_the_webhook_secret_never_shows_in_the_config_repr(tmp_path: Path) -> None:
    agent = load_agent_config(
        write(tmp_path, webhook={"url": "https://example.com/h", "secret": "s3cret-0123456789ab"})
    )
    assert "s3cret" not in repr(agent) and "s3cret" not in str(agent.model_dump())
    assert (
        agent.webhook is not None
        and agent.webhook.secret.get_secret_value() == "s3cret-0123456789ab"
    )
