"""Agent config files: good ones load, bad ones fail with a message naming the field."""

from pathlib import Path

import pytest

from switchboard.agent.config import load_agent_config
from switchboard.errors import ConfigError
from switchboard.settings import DEFAULT_AGENT_CONFIG, Settings


def test_example_receptionist_loads() -> None:
    config = load_agent_config(DEFAULT_AGENT_CONFIG)
    assert {"hours", "appointment", "billing", "transfer", "goodbye"} <= {i.name for i in config.intents}
    assert any(i.end_call for i in config.intents)
    # The shipped example uses call control: a keypad menu, a transfer, digit collection, idle handling.
    assert config.keypad is not None and config.keypad.options["0"] == "transfer"
    assert config.intent("transfer").transfer == "+15555550100"
    assert config.intent("patient_number").collect_digits is not None
    assert config.silence.max_reprompts >= 1 and config.limits.max_duration_secs <= 3600


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("name: x\ngreeting: hi\n", "fallback"),
        ("name: x\ngreeting: hi\nfallback: what\nintents:\n  - name: a\n    phrases: []\n    reply: r\n", "intents.0.phrases"),
        ("name: x\ngreeting: hi\nfallback: what\nintents:\n  - name: A B\n    phrases: [p]\n    reply: r\n", "intents.0.name"),
        ("name: x\ngreeting: hi\nfallback: what\ncolour: blue\n", "colour"),
        ("name: x\ngreeting: hi\nfallback: what\nversion: 7\n", "version"),
        (
            "name: x\ngreeting: hi\nfallback: f\nintents:\n  - {name: a, phrases: [p], reply: r}\n  - {name: a, phrases: [q], reply: s}\n",
            "unique",
        ),
        ("- just\n- a list\n", "mapping"),
        ("name: x\ngreeting: hi\nfallback: f\nintents:\n  - {name: a, phrases: [p], reply: r, transfer: desk}\n", "intents.0.transfer"),
        (
            "name: x\ngreeting: hi\nfallback: f\nintents:\n  - {name: a, phrases: [p], reply: r, transfer: '+15551234567', end_call: true}\n",
            "either ends the call or transfers",
        ),
        ("name: x\ngreeting: hi\nfallback: f\nkeypad: {options: {'11': a}}\n", "keypad.options"),
        ("name: x\ngreeting: hi\nfallback: f\nkeypad: {options: {'1': nobody}}\n", "unknown intents: nobody"),
        ("name: x\ngreeting: hi\nfallback: f\nsilence: {reprompt_after_secs: 0}\n", "silence.reprompt_after_secs"),
        ("name: x\ngreeting: hi\nfallback: f\nlimits: {max_duration_secs: -5}\n", "limits.max_duration_secs"),
        ("name: x\ngreeting: hi\nfallback: f\nnumbers: ['5551234']\n", "numbers"),
        (
            "name: x\ngreeting: hi\nfallback: f\nintents:\n  - name: a\n    phrases: [p]\n    reply: r\n    collect_digits: {reply: 'got {account}'}\n",
            "intents.0.collect_digits.reply",
        ),
        ("name: x\ngreeting: hi\nfallback: f\nintents:\n  - {name: a, phrases: [p], reply: r, send_digits: '12x#'}\n", "intents.0.send_digits"),
        ("name: x\ngreeting: hi\nfallback: f\nintents:\n  - {name: a, phrases: [p], reply: r, send_digits: ''}\n", "intents.0.send_digits"),
        (
            "name: x\ngreeting: hi\nfallback: f\nintents:\n  - {name: a, phrases: [p], reply: r, send_digits: '1', end_call: true}\n",
            "end_call and send_digits",
        ),
        ("name: [unclosed\n", "YAML"),
    ],
)
def test_bad_agent_config_names_the_problem(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_agent_config(_write(tmp_path, body))
    assert expected in str(excinfo.value)
    assert "agent.yaml" in str(excinfo.value)


def test_an_intent_may_send_digits_with_pauses(tmp_path: Path) -> None:
    body = "name: x\ngreeting: hi\nfallback: f\nintents:\n  - {name: a, phrases: [p], reply: r, send_digits: '1w*0#'}\n"
    assert load_agent_config(_write(tmp_path, body)).intents[0].send_digits == "1w*0#"


def test_missing_agent_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_agent_config(tmp_path / "nope.yaml")


def test_settings_read_prefixed_and_provider_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_PORT", "9123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret-token")
    settings = Settings()
    assert settings.port == 9123
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.get_secret_value() == "secret-token"
    assert "secret-token" not in repr(settings)


def test_bad_setting_is_rejected_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("SWITCHBOARD_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_cli_reports_config_error_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from switchboard.cli import main

    bad = _write(tmp_path, "name: x\n")
    assert main(["serve", "--agent", str(bad), "--port", "1"]) == 2
    assert "greeting" in capsys.readouterr().err
