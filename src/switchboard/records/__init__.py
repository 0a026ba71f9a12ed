"""Call records: the call history database, opt-in recordings and post-call webhooks.

A worker hands each finished call to ``save_call`` (see ``archive``); the orchestrator serves
the history through ``orchestrator.calls_api``; ``docs/records.md`` describes it all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from switchboard.records.models import CallPage, CallQuery, CallSummary, StoredCall
from switchboard.records.store import CallStore
from switchboard.records.webhooks import SIGNATURE_HEADER, sign, verify_signature

if TYPE_CHECKING:
    from switchboard.records.archive import CallArchive, attach_capture, save_call

# The archive observes Pipecat pipelines; importing Pipecat here would load it (and print its
# banner before logging is configured) for every CLI command and the orchestrator.
_LAZY = {"CallArchive", "attach_capture", "save_call"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from switchboard.records import archive

        return getattr(archive, name)
    raise AttributeError(name)


__all__ = [
    "SIGNATURE_HEADER",
    "CallArchive",
    "CallPage",
    "CallQuery",
    "CallStore",
    "CallSummary",
    "StoredCall",
    "attach_capture",
    "save_call",
    "sign",
    "verify_signature",
]
