"""Instruments that call the agent from the outside: the caller simulator and its reports."""

from switchboard.loadtest.caller import CallerTurn, CallScript, run_call
from switchboard.loadtest.report import (
    REPORT_VERSION,
    CallOutcome,
    CallResult,
    GreetingResult,
    TurnResult,
    format_summary,
    write_json,
)

__all__ = [
    "REPORT_VERSION",
    "CallOutcome",
    "CallResult",
    "CallScript",
    "CallerTurn",
    "GreetingResult",
    "TurnResult",
    "format_summary",
    "run_call",
    "write_json",
]
