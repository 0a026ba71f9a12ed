"""Call ids: the formats every store, log and token already holds, spelled by one module."""

from __future__ import annotations

import re

from switchboard.call_ids import call_id_for_twilio, is_call_id, new_call_id, twilio_call_sid
from switchboard.telephony.livekit import ROOM_PATTERN


def test_a_twilio_call_is_named_after_its_call_sid_and_back() -> None:
    assert call_id_for_twilio("CA0123") == "call-CA0123"
    assert twilio_call_sid(call_id_for_twilio("CA0123")) == "CA0123"
    assert is_call_id("call-CA0123") and not is_call_id("CA0123") and not is_call_id("rec/call.flac")


def test_a_fresh_call_id_is_twelve_hex_digits_after_its_kind() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"call-[0-9a-f]{12}", i) for i in ids), ids
    assert re.fullmatch(r"call-webrtc-[0-9a-f]{12}", new_call_id("webrtc"))
    # An outbound LiveKit call's room is named after its fresh id: a room the dispatcher answers.
    assert ROOM_PATTERN.fullmatch(new_call_id())
