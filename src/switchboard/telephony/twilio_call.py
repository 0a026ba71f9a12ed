"""A Twilio Media Stream as a call: Pipecat's WebSocket transport (staged input) with our serializer."""

from __future__ import annotations

from collections.abc import Sequence

from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

from switchboard.audio import TELEPHONY_RATE
from switchboard.settings import Settings
from switchboard.telephony.base import CallAdapter, CallControl, CallIds
from switchboard.telephony.media_socket import CLOSE_HANDED_OFF, MediaSocketGuard
from switchboard.telephony.staged_input import StagedWebsocketTransport
from switchboard.telephony.twilio import PlaybackMarker, StreamStart, SwitchboardTwilioSerializer
from switchboard.telephony.twilio_rest import (
    TwilioCallControl,
    WarmTransferWaits,
    transfer_status_url,
    warm_status_url,
)


class TwilioStreamAdapter(CallAdapter):
    """One ``<Connect><Stream>`` WebSocket whose ``start`` message has been read."""

    ingress = "twilio"
    out_sample_rate = TELEPHONY_RATE

    def __init__(
        self,
        websocket: MediaSocketGuard,
        start: StreamStart,
        settings: Settings,
        *,
        call_id: str | None = None,
        control: CallControl | None = None,
        callback_base: str | None = None,
        warm_waits: WarmTransferWaits | None = None,
    ):
        """``websocket`` is the stream behind its input limits; ``callback_base``: the public URL
        Twilio reaches this server at, for transfer reports; ``warm_waits``: the process's warm
        transfers awaiting an answer."""
        self.start = start
        params = start.custom_parameters
        self.ids = CallIds(
            call_sid=start.call_sid or start.stream_sid,
            stream_sid=start.stream_sid,
            call_id=call_id or "",
            dialed=params.get("To", ""),
            caller=params.get("From", ""),
        )
        outbound = params.get("Direction", "").startswith("outbound")
        auth_token = (
            settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        )
        can_hang_up = bool(auth_token and settings.twilio_account_sid and start.call_sid)
        self.serializer = SwitchboardTwilioSerializer(
            stream_sid=start.stream_sid,
            call_sid=start.call_sid or None,
            account_sid=settings.twilio_account_sid,
            auth_token=auth_token if can_hang_up else None,
            # Without credentials, closing the stream ends <Connect> and the TwiML's <Hangup/> follows.
            base_url=settings.twilio_api_url,
            params=SwitchboardTwilioSerializer.InputParams(auto_hang_up=can_hang_up),
            input_frame_ms=settings.input_frame_ms,
            socket=websocket,
        )
        if control is None:
            status_url = (
                transfer_status_url(callback_base, self.ids.call_sid) if callback_base else None
            )
            warm = None
            if warm_waits is not None and callback_base:
                warm = (warm_waits, warm_status_url(callback_base, start.call_sid))
            # The person a warm transfer rings sees our number: the one dialed (inbound), or
            # the caller ID we called out with (outbound).
            ours = self.ids.caller if outbound else self.ids.dialed
            control = TwilioCallControl(
                settings,
                start.call_sid,
                self.serializer,
                status_url=status_url,
                warm=warm,
                caller_id=ours if ours.startswith("+") else None,
            )
        self.control = control
        self._websocket = websocket
        self._output_frame_ms = settings.output_frame_ms
        self._transport: StagedWebsocketTransport | None = None

    def transport(self) -> StagedWebsocketTransport:
        if self._transport is None:
            # Its input can hand the caller's audio to the call's media stage (media_stage=lean).
            self._transport = StagedWebsocketTransport(
                self._websocket,  # type: ignore[arg-type]  # the guard stands in for the WebSocket
                FastAPIWebsocketParams(
                    audio_in_enabled=True,
                    audio_out_enabled=True,
                    add_wav_header=False,
                    serializer=self.serializer,
                    session_timeout=int(self.max_call_secs),
                    audio_out_10ms_chunks=self._output_frame_ms // 10,
                ),
            )
        return self._transport

    def before_output(self) -> Sequence[FrameProcessor]:
        return [PlaybackMarker()]

    def marks_played(self) -> list[str]:
        return list(self.serializer.marks_played)

    def hand_off(self) -> None:
        self._websocket.end_code = CLOSE_HANDED_OFF
