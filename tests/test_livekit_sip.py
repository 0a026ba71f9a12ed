"""Calls over real SIP and RTP (G.711 µ-law) through the real LiveKit SIP and LiveKit server:
PSTN-like phone → LiveKit SIP → a ``call-…`` room → signed webhook → Redis job → a worker joins
the room and talks. Judged by the call record and the phones' SIP dialogs, not by transcribing.

One stack for the module (``livekit_stack.py``); each test places its own calls on it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import OPERATOR, SPEECH_DIR, wait_for
from livekit_stack import (
    CALLER_NUMBER,
    OUR_NUMBER,
    SECOND_NUMBER,
    LiveKitSipStack,
    reset_phones,
    start_livekit_sip_stack,
)
from switchboard.loadtest.sip_phone import Answer, PhoneCall

GO_FORWARD = SPEECH_DIR / "pocketsphinx_goforward_16k.wav"  # "go forward ten meters": directions
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def stack() -> Iterator[LiveKitSipStack]:
    stack = start_livekit_sip_stack()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _fresh_phones(stack: LiveKitSipStack) -> Iterator[None]:
    reset_phones(stack)
    yield
    reset_phones(stack)


def answered_call(stack: LiveKitSipStack) -> tuple[PhoneCall, str, float]:
    """Dial our number; return the answered call, its call id and when the greeting began."""
    before = stack.call_ids()
    call = stack.caller.call(stack.sip_uri)
    try:
        # LiveKit SIP answers (200 OK) only once the agent has subscribed to the caller's audio.
        call.wait_confirmed(60)
    except (AssertionError, TimeoutError) as e:
        raise AssertionError(f"{e}\n{stack.diagnostics()}") from e
    greeting = call.wait_for_sound(call.confirmed_at or 0, 15)
    return call, stack.latest_call_id(before), greeting


def say_and_hear_reply(call: PhoneCall, greeting_at: float) -> float:
    """Wait out the greeting, say the clip, and return when the reply started."""
    quiet = call.wait_for_silence(greeting_at, 0.8, 20)
    assert quiet > greeting_at
    spoken = call.say(GO_FORWARD)
    said_at = time.monotonic()
    return call.wait_for_sound(said_at + spoken, 20)


def test_an_inbound_call_is_answered_turn_by_turn_and_its_bye_saves_the_record(
    stack: LiveKitSipStack,
) -> None:
    call, call_id, greeting_at = answered_call(stack)
    say_and_hear_reply(call, greeting_at)
    call.wait_for_silence(time.monotonic(), 0.8, 20)
    call.hang_up()  # the phone's BYE
    call.wait_ended(10)

    record = stack.saved_record(call_id)
    assert record["ingress"] == "livekit"
    assert record["outcome"] == "completed", record
    assert record["intents"] == ["directions"], record
    assert record["from_number"] == CALLER_NUMBER and record["to_number"] == OUR_NUMBER
    assert record["room"].startswith("call-_+15105550100_"), record
    said = " ".join(e["text"] for e in record["transcript"] if e["role"] == "user").lower()
    assert "forward" in said, record["transcript"]


def test_keypad_digits_reach_the_menu_and_the_agents_end_call_hangs_up_the_phone(
    stack: LiveKitSipStack,
) -> None:
    call, call_id, greeting_at = answered_call(stack)
    call.wait_for_silence(greeting_at, 0.8, 20)
    call.send_digits("4")  # RFC 4733 events: the account intent collects digits
    prompt = call.wait_for_sound(time.monotonic(), 15)
    call.wait_for_silence(prompt, 0.8, 20)
    call.send_digits("123#")
    confirmed = call.wait_for_sound(time.monotonic(), 15)
    call.wait_for_silence(confirmed, 0.8, 20)
    call.send_digits("9")  # goodbye, an end_call intent
    call.wait_ended(20)  # the phone never hung up: this is the agent's BYE
    assert call.status_code == 200, call

    record = stack.saved_record(call_id)
    # Menu keys are logged one by one; the keys typed into a collection, once, as its digits.
    pressed = [(e["event"], e.get("digit") or e.get("digits")) for e in record["events"]
               if e["event"] in ("keypad", "digits")]
    assert pressed == [("keypad", "4"), ("digits", "123"), ("keypad", "9")], record["events"]
    agent_said = [e["text"] for e in record["transcript"] if e["role"] == "agent"]
    assert "Thank you. I have account 1 2 3." in agent_said, agent_said
    assert agent_said[-1] == "Goodbye.", agent_said


def test_a_call_to_a_number_no_agent_answers_is_refused_at_once(stack: LiveKitSipStack) -> None:
    call = stack.caller.call(f"sip:+15559999@127.0.0.1:{stack.livekit.ports.sip}")
    call.wait_ended(15)  # without the refusal it would ring until the caller gave up
    assert call.confirmed_at is None
    assert call.status_code == 486, call


def test_a_room_outside_call_rooms_is_never_joined(stack: LiveKitSipStack) -> None:
    """A SIP participant joining ``support-…`` fires the same webhook; nobody is sent there."""
    import asyncio

    from livekit import api

    from switchboard.settings import Settings
    from switchboard.telephony.livekit_sip import dial, livekit_client

    settings = Settings(**stack.livekit.env())

    async def ring_second_phone_into(room: str) -> list[str]:
        async with livekit_client(settings) as lk:
            await dial(lk, trunk=stack.outbound_trunk, to=SECOND_NUMBER, room=room,
                       identity="sip_support", ring_secs=10, attributes={})  # fmt: skip
            await asyncio.sleep(3)  # time for a webhook, a job and a worker, were there any
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            return [p.identity for p in listed.participants]

    before = stack.call_ids()
    present = asyncio.run(ring_second_phone_into("support-1"))
    assert present == ["sip_support"]
    assert stack.call_ids() == before
    stack.second.wait_incoming().wait_ended(10)


def test_an_outbound_call_rings_a_sip_phone_that_hears_the_agent_once_it_answers(
    stack: LiveKitSipStack,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stack.second.answer = Answer.RING
    rings_before = len([c for c in stack.second.calls if c.direction == "inbound"])
    with ThreadPoolExecutor(1) as pool:
        placing = pool.submit(
            httpx.post, f"{stack.url}/calls", headers=OPERATOR, timeout=30,
            json={"to": SECOND_NUMBER, "from": OUR_NUMBER, "ingress": "livekit"},
        )  # fmt: skip
        callee = stack.second.wait_incoming(15, count=rings_before + 1)
        time.sleep(2.5)  # the agent is in the room while the phone rings
        callee.answer()
        response = placing.result(timeout=30)
    assert response.status_code == 201, response.text
    placed = response.json()
    assert placed["status"] == "answered" and placed["room"] == placed["call_id"]
    callee.wait_confirmed(5)
    # The greeting starts after the answer (said to a ringing phone, it would be lost).
    callee.wait_for_sound(callee.confirmed_at or 0, 10)
    callee.wait_for_silence(callee.confirmed_at or 0, 0.8, 15)
    callee.hang_up()
    record = stack.saved_record(placed["call_id"])
    assert record["ingress"] == "livekit" and record["outcome"] == "completed", record
    assert record["from_number"] == OUR_NUMBER and record["to_number"] == SECOND_NUMBER
    assert [e["text"] for e in record["transcript"]][:1] == ["Hello, this is the test line."], record


@pytest.mark.parametrize(
    ("answer", "http_status", "outcome"), [(Answer.BUSY, 502, "busy"), (Answer.RING, 504, "no_answer")]
)
def test_an_outbound_call_nobody_takes_is_recorded_as_such(
    stack: LiveKitSipStack, answer: Answer, http_status: int, outcome: str
) -> None:
    stack.second.answer = answer
    response = httpx.post(
        f"{stack.url}/calls", headers=OPERATOR, timeout=30,
        json={"to": SECOND_NUMBER, "from": OUR_NUMBER, "ingress": "livekit"},
    )  # fmt: skip
    assert response.status_code == http_status, response.text
    detail = response.json()["detail"]
    assert detail["outcome"] == outcome, detail
    rang = stack.second.calls[-1]
    rang.wait_ended(10)
    assert rang.confirmed_at is None, rang
    # A worker that claimed the job joined the room while the phone rang (or after the room
    # closed); nobody answered, so its run was no call: not stored, and the call stays failed.
    def settled() -> dict | None:
        stats = httpx.get(f"{stack.url}/stats", headers=OPERATOR, timeout=5).json()
        state = stack.record(detail["call_id"])
        idle = all(w["load"] == 0 for w in stats["workers"])
        return state if idle and state.get("status") == "failed" else None

    state = wait_for(settled, 40, what="the workers to be done with the call")
    assert "outcome" not in state, state  # an unanswered call is no call in the history


def test_a_cold_transfer_refers_the_caller_to_the_second_phone(stack: LiveKitSipStack) -> None:
    call, call_id, greeting_at = answered_call(stack)
    call.wait_for_silence(greeting_at, 0.8, 20)
    rings_before = len([c for c in stack.second.calls if c.direction == "inbound"])
    call.send_digits("0")  # the transfer intent: a REFER to the second phone's URI
    desk = stack.second.wait_incoming(20, count=rings_before + 1)
    desk.wait_confirmed(10)
    assert call.transfers_requested and SECOND_NUMBER in call.transfers_requested[0]
    # The caller's own phone followed the REFER: the desk is called by it, not by LiveKit.
    assert f"sip:{CALLER_NUMBER}@127.0.0.1" in desk.remote_uri, desk.remote_uri
    desk.hang_up()
    call.wait_ended(20)  # LiveKit SIP hangs up its leg once the REFER succeeded
    record = stack.saved_record(call_id)
    agent_said = [e["text"] for e in record["transcript"] if e["role"] == "agent"]
    assert agent_said[-1] == "Putting you through.", agent_said
    assert [e["digit"] for e in record["events"] if e["event"] == "keypad"] == ["0"]
    assert record["ended_by"] == "transfer" and SECOND_NUMBER in record["transfer"]["target"], record


def test_a_cold_transfer_to_a_busy_desk_leaves_the_caller_with_the_agent(stack: LiveKitSipStack) -> None:
    """LiveKit SIP reports the REFER's outcome: the agent says nobody could take the call, and
    the conversation goes on."""
    stack.second.answer = Answer.BUSY
    call, call_id, greeting_at = answered_call(stack)
    call.wait_for_silence(greeting_at, 0.8, 20)
    call.send_digits("0")  # "Putting you through.", then a REFER to the desk, which is busy
    call.wait(lambda c: bool(c.transfers_requested), 30, "the REFER")
    apology = call.wait_for_sound(time.monotonic(), 30)
    call.wait_for_silence(apology, 0.8, 20)
    # (PJSIP reports the REFER's own call on this PhoneCall: its state is not the caller's leg.)
    spoken = call.say(GO_FORWARD)
    reply = call.wait_for_sound(time.monotonic() + spoken, 20)
    call.wait_for_silence(reply, 0.8, 20)
    call.send_digits("9")  # goodbye: the agent ends the call it kept
    record = stack.saved_record(call_id)
    transfers = [e for e in record["events"] if e["event"] == "transfer"]
    assert [t["outcome"] for t in transfers] == ["busy"], record["events"]
    agent_said = [e["text"] for e in record["transcript"] if e["role"] == "agent"]
    assert any(line.startswith("Sorry, nobody is available") for line in agent_said), agent_said
    assert "directions" in record["intents"] and record["ended_by"] == "agent", record


def test_a_warm_transfer_briefs_the_desk_with_the_caller_on_hold_then_bridges_them(
    stack: LiveKitSipStack,
) -> None:
    """Through the trunk into the caller's own room (no MoveParticipant: the open-source
    server lacks it); the caller hears nobody while the desk rings and is briefed."""
    call, call_id, greeting_at = answered_call(stack)
    call.wait_for_silence(greeting_at, 0.8, 20)
    rings_before = len([c for c in stack.second.calls if c.direction == "inbound"])
    call.send_digits("2")  # "Let me get the desk for you.", then the desk is dialed
    desk = stack.second.wait_incoming(30, count=rings_before + 1)
    desk.wait_confirmed(15)
    assert desk.confirmed_at is not None
    brief = desk.wait_for_sound(desk.confirmed_at, 15)
    briefed = desk.wait_for_silence(brief, 0.8, 20)
    # (The reply before the dial may still be in the caller's ear when the desk answers.)
    overheard = call.first_sound_after(brief + 0.2)
    assert overheard is None or overheard > briefed, "the caller heard the brief"

    spoken = call.say(GO_FORWARD)  # bridged: each hears the other, and no agent answers
    said_at = time.monotonic()
    assert desk.wait_for_sound(max(said_at, briefed + 0.5), 10) < said_at + spoken
    desk.say(GO_FORWARD)
    call.wait_for_sound(time.monotonic(), 10)

    desk.hang_up()  # the orchestrator closes the bridged room: the caller's phone gets a BYE
    call.wait_ended(20)
    record = stack.saved_record(call_id)
    transfers = [e for e in record["events"] if e["event"] == "transfer"]
    assert [(t["mode"], t["outcome"]) for t in transfers] == [("warm", "answered")], record["events"]
    assert record["ended_by"] == "transfer", record
    agent_said = [e["text"] for e in record["transcript"] if e["role"] == "agent"]
    assert agent_said[-2:] == ["Let me get the desk for you.", "A caller is asking for the desk."], agent_said
    assert "directions" not in record["intents"], "the agent answered after it left"


def test_a_worker_killed_mid_call_is_replaced_and_the_call_carries_on(stack: LiveKitSipStack) -> None:
    call, call_id, greeting_at = answered_call(stack)
    say_and_hear_reply(call, greeting_at)
    call.wait_for_silence(time.monotonic(), 0.8, 20)
    owner = stack.record(call_id)["worker"]
    victim = next(w for w in stack.workers if owner in w.log_path.name)
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    # Another worker reclaims the job, joins the same room and says the agent's resumed line.
    carried_on = call.wait_for_sound(time.monotonic() + 0.5, 30)
    call.wait_for_silence(carried_on, 0.8, 20)
    spoken = call.say(GO_FORWARD)
    call.wait_for_sound(time.monotonic() + spoken, 20)
    call.hang_up()
    call.wait_ended(10)
    record = stack.saved_record(call_id)
    assert stack.record(call_id)["worker"] != owner
    assert record["intents"][-1] == "directions", record


def test_livekit_setup_is_idempotent_against_the_real_server(stack: LiveKitSipStack) -> None:
    """``switchboard livekit setup`` finds what the stack's own setup made and changes nothing;
    a changed number list is applied in place, and setting it back restores the trunk."""
    import subprocess
    import sys

    def setup(*numbers: str) -> str:
        argv = [sys.executable, "-m", "switchboard.cli", "livekit", "setup", "--carrier-address", "127.0.0.1/32",
                "--outbound-address", f"127.0.0.1:{stack.second.port}"]  # fmt: skip
        for number in numbers:
            argv += ["--number", number]
        done = subprocess.run(
            argv, env={**os.environ, **stack.livekit.env()}, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert setup(OUR_NUMBER).strip().endswith("nothing to change")
    changed = setup(OUR_NUMBER, "+15550101")
    assert "switchboard-inbound trunk updated" in changed, changed
    assert "switchboard-inbound trunk updated" in setup(OUR_NUMBER)
