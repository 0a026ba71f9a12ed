"""A room participant's audio as the agent's pipeline hears it: 16 kHz mono in 20 ms frames,
resampled and framed by LiveKit's native SDK rather than in Python.

Pipecat's LiveKit transport opens each participant's ``rtc.AudioStream`` at the SDK's default,
48 kHz in 10 ms frames, and resamples every frame to the pipeline's rate through a soxr stream in
Python. That stream hands its output on in blocks: a phone's steady 10 ms frames left it as
68.75 ms bursts (1100 samples at 16 kHz, one per six or seven frames in), so the caller's last
words reached the VAD up to 69 ms late, and the resampler ran a hundred times a second per call.
Asked for the pipeline's rate and 20 ms frames, the SDK resamples in Rust, Pipecat's resampler
passes frames whose rate already matches untouched, and the pipeline gets the Twilio path's
frame size, half as many hand-offs as 10 ms frames. Like the Twilio input, the frames are
``input_frame_ms`` long (the settings' trade of frames per call against end-of-speech delay).
"""

from __future__ import annotations

from livekit import rtc
from pipecat.transports.livekit.transport import LiveKitTransportClient

from switchboard.audio import FRAME_MS, PIPELINE_IN_RATE

ROOM_AUDIO_RATE = PIPELINE_IN_RATE


def room_audio_stream(track: rtc.Track, frame_ms: int = FRAME_MS) -> rtc.AudioStream:
    """A participant's audio track as the pipeline takes it."""
    return rtc.AudioStream(track, sample_rate=ROOM_AUDIO_RATE, num_channels=1, frame_size_ms=frame_ms)


class RoomAudioClient(LiveKitTransportClient):
    """Pipecat's LiveKit client, opening each participant's audio with :func:`room_audio_stream`."""

    frame_ms: int = FRAME_MS

    @classmethod
    def replacing(cls, client: LiveKitTransportClient, frame_ms: int = FRAME_MS) -> RoomAudioClient:
        """The same room, token and callbacks as ``client`` (built by ``LiveKitTransport``)."""
        replacement = cls(
            client._url, client._token, client._room_name, client._params,
            client._callbacks, client._transport_name,
        )  # fmt: skip
        replacement.frame_ms = frame_ms
        return replacement

    async def _async_on_track_subscribed(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ):
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            await super()._async_on_track_subscribed(track, publication, participant)
            return
        assert self._task_manager is not None
        # Pipecat 1.14's audio branch with the stream opened at our rate; the rest is as there:
        # a republished track (mute/unmute) replaces the participant's stream, never adds one.
        identity = participant.identity
        await self._close_audio_stream(identity)
        self._audio_tracks[identity] = track
        stream = room_audio_stream(track, self.frame_ms)
        task = self._task_manager.create_task(
            self._process_audio_stream(stream, identity), f"{self}::_process_audio_stream"
        )
        self._audio_streams[identity] = (stream, task)
        await self._callbacks.on_audio_track_subscribed(identity)
