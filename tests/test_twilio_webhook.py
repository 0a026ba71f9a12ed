"""POST /twilio/voice answers TwiML that connects a media stream; signatures are enforced."""

import uuid
from xml.etree import ElementTree

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus

from conftest import (
    OPERATOR,
    TWILIO_AUTH_TOKEN,
    Server,
    SignedAgent,
    first_media,
    twilio_connected,
    twilio_start,
    twilio_stop,
)

AUTH_TOKEN = TWILIO_AUTH_TOKEN
CALL = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "2" * 32, "From": "+15105550100", "To": "+18005550199"}


def parse_stream(twiml: str) -> tuple[str, dict[str, str]]:
    root = ElementTree.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


async def test_voice_webhook_connects_a_bidirectional_stream(agent_url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{agent_url}/twilio/voice", data=CALL)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    url, params = parse_stream(response.text)
    assert url == agent_url.replace("http://", "ws://") + "/twilio/media"
    assert params["CallSid"] == CALL["CallSid"]
    # After the stream closes, the call hangs up instead of falling through.
    assert ElementTree.fromstring(response.text).find("./Hangup") is not None


@pytest.fixture(scope="module")
def signed_server(signed_agent: SignedAgent) -> Server:
    return signed_agent.server


def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


async def test_signed_webhook_is_accepted(signed_server: Server) -> None:
    url = f"{signed_server.base_url}/twilio/voice"
    async with httpx.AsyncClient() as client:
        response = await client.post(url, data=CALL, headers={"X-Twilio-Signature": sign(url, CALL)})
    assert response.status_code == 200
    assert parse_stream(response.text)[0].endswith("/twilio/media")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        {"X-Twilio-Signature": "WRONG_TOKEN"},
    ],
    ids=["unsigned", "garbage", "wrong-token"],
)
async def test_forged_webhook_is_refused(signed_server: Server, headers: dict[str, str]) -> None:
    url = f"{signed_server.base_url}/twilio/voice"
    if headers.get("X-Twilio-Signature") == "WRONG_TOKEN":
        headers = {"X-Twilio-Signature": sign(url, CALL, token="someone-elses-token")}
    async with httpx.AsyncClient() as client:
        response = await client.post(url, data=CALL, headers=headers)
    assert response.status_code == 403
    assert "Stream" not in response.text


async def test_tampered_parameters_are_refused(signed_server: Server) -> None:
    url = f"{signed_server.base_url}/twilio/voice"
    signature = sign(url, CALL)
    async with httpx.AsyncClient() as client:
        response = await client.post(url, data={**CALL, "From": "+19995550000"}, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


async def test_unsigned_media_stream_is_refused(signed_server: Server) -> None:
    ws_url = signed_server.base_url.replace("http://", "ws://") + "/twilio/media"
    with pytest.raises(InvalidStatus):
        async with websockets.connect(ws_url, open_timeout=5) as ws:
            await ws.recv()


async def test_a_signed_media_stream_is_answered_by_the_agent(signed_server: Server) -> None:
    ws_url = signed_server.base_url.replace("http://", "ws://") + "/twilio/media"
    headers = {"X-Twilio-Signature": sign(ws_url, {})}
    call_sid, stream_sid = "CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex
    async with websockets.connect(ws_url, open_timeout=5, additional_headers=headers) as ws:
        await ws.send(twilio_connected())
        await ws.send(twilio_start(call_sid, stream_sid))
        greeting = await first_media(ws)
        assert greeting["streamSid"] == stream_sid and greeting["media"]["payload"]
        await ws.send(twilio_stop(call_sid, stream_sid))
    async with httpx.AsyncClient() as client:
        record = (await client.get(f"{signed_server.base_url}/calls/{call_sid}", headers=OPERATOR)).json()
    assert record["agent"] == "Test agent for the speech clips" and record["stream_sid"] == stream_sid
