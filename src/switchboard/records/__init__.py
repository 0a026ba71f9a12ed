"""Call records: the call history database, opt-in recordings and post-call webhooks.

A worker hands each finished call to ``save_call`` (see ``archive``); the orchestrator serves
the history through ``orchestrator.calls_api``; ``docs/records.md`` describes it all.
"""

from switchboard.records.archive import CallArchive, attach_capture, save_call
from switchboard.records.models import CallPage, CallQuery, CallSummary, StoredCall
from switchboard.records.store import CallStore
from switchboard.records.webhooks import SIGNATURE_HEADER, sign, verify_signature

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
