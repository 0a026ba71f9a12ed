"""Switchboard's exception hierarchy: one base class, one subclass per kind of failure."""


class SwitchboardError(Exception):
    """Base class of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """A configuration file or setting is invalid; the message names the field."""


class EngineError(SwitchboardError):
    """An STT, TTS or LLM engine could not be built or failed."""


class TelephonyError(SwitchboardError):
    """A telephony peer sent something we cannot accept."""
