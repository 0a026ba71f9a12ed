"""Switchboard's call ids, spelled here once: every layer names a call by them.

A call's id keys its log lines, ledger entry, session, stored record and recording. Every id
starts with ``call-``: a Twilio call's is ``call-<CallSid>`` (so its webhooks, streams and
callbacks, which carry only the ``CallSid``, all find the same call), and a call Switchboard
starts itself (a queued job, an outbound LiveKit call, a browser call) gets a fresh one. A
LiveKit call's room is named after its call, so the SIP dispatch rule's room prefix is the same
``call-``.

This module imports nothing of Switchboard's, so every layer may name a call.
"""

from __future__ import annotations

import uuid

CALL_ID_PREFIX = "call-"
_FRESH_ID_HEX = 12


def call_id_for_twilio(call_sid: str) -> str:
    """The id of the Twilio call ``call_sid``: ``call-<CallSid>``."""
    return CALL_ID_PREFIX + call_sid


def twilio_call_sid(call_id: str) -> str:
    """The ``CallSid`` in a Twilio call's id (the inverse of :func:`call_id_for_twilio`)."""
    return call_id.removeprefix(CALL_ID_PREFIX)


def new_call_id(kind: str = "") -> str:
    """A fresh id for a call Switchboard starts: ``call-<12 hex>``, or ``call-<kind>-<12 hex>``."""
    infix = f"{kind}-" if kind else ""
    return CALL_ID_PREFIX + infix + uuid.uuid4().hex[:_FRESH_ID_HEX]


def is_call_id(name: str) -> bool:
    """Whether ``name`` is spelled as a call id (a CLI argument that may also be a file)."""
    return name.startswith(CALL_ID_PREFIX)
