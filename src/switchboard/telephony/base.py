"""What every ingress hands the call runner: a Pipecat transport and its call-control operations.

An ingress (a Twilio media stream, a LiveKit room, a browser's WebRTC peer) is a
:class:`CallAdapter` in its own module of this package. The one call runner
(:func:`switchboard.call.runner.run_call`, admitted by :class:`switchboard.call.host.CallHost`) builds the agent's pipeline around
``adapter.transport()``, and features that act on the phone call itself (hang up, transfer)
go through ``adapter.control``, so each is written once. Sending digits to the far end needs no
operation here: the call controller queues Pipecat DTMF frames into the pipeline, which every
transport plays, in-band or natively (:mod:`switchboard.call.conversation.send_digits`).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport

from switchboard.errors import TelephonyError

if TYPE_CHECKING:
    from switchboard.call.conversation.pipeline import CallPipeline

DEFAULT_MAX_CALL_SECS = 3600.0


class CallControlError(TelephonyError):
    """A call-control operation (transfer) failed or is not possible here."""


class UnsupportedOperation(CallControlError):
    """This ingress cannot do that operation (a browser call has no number to transfer)."""


class TransferOutcome(enum.StrEnum):
    """How a transfer ended, as far as this process learns it."""

    INITIATED = "initiated"  # the carrier accepted the redirect; the dial result comes later
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    INVALID_TARGET = "invalid_target"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class CallIds:
    """How the call is known: to the carrier, to its media stream and to Switchboard."""

    call_sid: str
    stream_sid: str
    call_id: str = ""
    dialed: str = ""  # the number the caller dialed (Twilio ``To``), when the ingress knows it
    caller: str = ""


Brief = Callable[[str], Awaitable[None]]  # the agent says a line; returns once it was heard


class CallControl:
    """Operations on the phone call beyond its audio; each ingress overrides what it can do.

    Keypad digits to the far end are not one of them: they travel as DTMF frames in the call's
    pipeline, so they are written once for every ingress (:mod:`switchboard.call.conversation.send_digits`).
    """

    async def hang_up(self) -> None:
        """End the call at the carrier. By default the transport closing is enough."""

    async def transfer(self, target: str) -> TransferOutcome:
        """Connect the caller to ``target`` (a number or SIP URI) and leave the call."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot transfer calls")

    async def warm_transfer(
        self, target: str, summary: str, brief: Brief | None = None
    ) -> TransferOutcome:
        """Call ``target``, say ``summary`` to whoever answers, then bridge the caller to them.

        ``brief(summary)`` has the agent say it and returns once it was heard, for an ingress
        whose carrier cannot speak it itself. Returns how the call to the person went; anything
        but ANSWERED leaves the caller here."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot make warm transfers")


class NoCallControl(CallControl):
    """An ingress with no carrier behind it: the call ends when its transport closes."""


class CallAdapter(ABC):
    """One call arriving through one ingress, ready to be run by the call runner."""

    ingress: ClassVar[str]
    ids: CallIds
    control: CallControl
    out_sample_rate: int
    max_call_secs: float = DEFAULT_MAX_CALL_SECS

    @abstractmethod
    def transport(self) -> BaseTransport:
        """The Pipecat transport the pipeline runs on (built once, on first call)."""

    def before_output(self) -> Sequence[FrameProcessor]:
        """Ingress-specific processors just before the output (Twilio's playback marks)."""
        return ()

    def attach(self, call: CallPipeline) -> None:  # noqa: B027 - optional hook, empty by design
        """Wire ingress-specific handlers and observers to the built pipeline."""

    def succeeded(self) -> bool:
        """Whether a pipeline that ran to its end was a real call (a peer that never connected
        was not)."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release what the ingress holds once the pipeline has ended."""

    def hand_off(self) -> None:  # noqa: B027 - optional hook, empty by design
        """The worker is out of drain time: end our side so the call goes on elsewhere (a
        Twilio stream closes with "service restart" and comes back to another worker)."""

    def marks_played(self) -> list[str]:
        """Playback marks the peer echoed (Twilio only)."""
        return []
