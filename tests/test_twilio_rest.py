"""Twilio call control through the real ``twilio`` SDK against ``switchboard emulate twilio``."""

import sys
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient

from conftest import Server, free_port, wait_for
from conftest import _start as start_server
from switchboard.settings import Settings
from switchboard.telephony.base import TransferOutcome, UnsupportedOperation
from switchboard.telephony.twilio import SwitchboardTwilioSerializer
from switchboard.telephony.twilio_rest import TwilioCallControl, dial_twiml, rest_client

ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "rest-test-token"


@pytest.fixture(scope="module")
def twilio_api() -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "switchboard.emulators", "twilio", "--port", str(port),
            "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN,
            "--dial-outcome", "+15005550300=no-answer"]  # fmt: skip
    server = start_server(argv, "emulator-twilio", "/health", port, None)
    yield server
    server.stop()


def get_json(url: str) -> dict:
    return httpx.get(url, timeout=5).json()


def settings_for(twilio_api: Server, token: str = AUTH_TOKEN) -> Settings:
    return Settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=SecretStr(token),
        twilio_api_url=twilio_api.base_url,
    )


def control(
    settings: Settings, call_sid: str
) -> tuple[TwilioCallControl, SwitchboardTwilioSerializer]:
    serializer = SwitchboardTwilioSerializer(
        stream_sid="MZ1", params=SwitchboardTwilioSerializer.InputParams(auto_hang_up=False)
    )
    return TwilioCallControl(settings, call_sid, serializer, status_url=None), serializer


def test_dial_twiml_rings_a_number_or_a_sip_uri_and_reports_back() -> None:
    assert dial_twiml("+15551234567", action="https://x/cb", ring_secs=20) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://x/cb" method="POST" '
        'timeout="20"><Number>+15551234567</Number></Dial></Response>'
    )
    assert "<Sip>sip:desk@pbx.example.com</Sip>" in dial_twiml(
        "sip:desk@pbx.example.com", action=None, ring_secs=20
    )


async def test_a_transfer_updates_the_call_with_dial_twiml(twilio_api: Server) -> None:
    ctl, serializer = control(settings_for(twilio_api), "CA" + "a" * 32)
    assert await ctl.transfer("+15005550300") is TransferOutcome.INITIATED
    assert serializer.handed_off
    url = f"{twilio_api.base_url}/emulator/calls/{'CA' + 'a' * 32}"
    call = wait_for(lambda: (c := get_json(url))["dialed"] and c, what="the dial")
    assert "<Number>+15005550300</Number>" in call["twiml"][0]
    assert call["dialed"][0]["outcome"] == "no-answer"


async def test_a_refused_redirect_is_a_failed_transfer_and_the_call_stays(
    twilio_api: Server,
) -> None:
    ctl, serializer = control(settings_for(twilio_api, token="wrong"), "CA" + "b" * 32)
    assert await ctl.transfer("+15005550300") is TransferOutcome.FAILED
    assert not serializer.handed_off


async def test_an_unknown_target_is_refused_without_asking_twilio(twilio_api: Server) -> None:
    before = get_json(f"{twilio_api.base_url}/stats")["connections"]
    ctl, _ = control(settings_for(twilio_api), "CA" + "c" * 32)
    assert await ctl.transfer("front desk") is TransferOutcome.INVALID_TARGET
    assert get_json(f"{twilio_api.base_url}/stats")["connections"] == before


async def test_without_credentials_transfer_is_unsupported() -> None:
    ctl, _ = control(Settings(), "CA" + "d" * 32)
    with pytest.raises(UnsupportedOperation, match="TWILIO_ACCOUNT_SID"):
        await ctl.transfer("+15005550300")


async def test_the_emulator_creates_calls_and_posts_their_progress(twilio_api: Server) -> None:
    async with AsyncTwilioHttpClient() as http:
        client = rest_client(settings_for(twilio_api), http)
        call = await client.calls.create_async(
            to="+15005550301", from_="+15005550006", twiml="<Response><Say>hi</Say></Response>"
        )
    assert call.sid.startswith("CA") and call.status == "queued"
    with pytest.raises(TwilioRestException, match="Missing parameter"):
        async with AsyncTwilioHttpClient() as http:
            await rest_client(settings_for(twilio_api), http).calls.create_async(
                to="+15005550301", from_="+15005550006"
            )
