"""``CallTicket``: what an ingress knows of a call before it runs, the input of admission."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.agent.directory import CallRoute


@dataclass(frozen=True)
class CallTicket:
    """Who the call is, whom it is for, and whether it carries on a call begun elsewhere.

    Each ingress builds one (a Twilio stream from its ``start`` message and stream token, a
    browser call from its offer, a LiveKit room job from the job) and hands it with its adapter
    to :meth:`switchboard.call.host.CallHost.run`, which does everything else once.
    """

    call_id: str  # the log context's id: Switchboard's call id, else ``call-<CallSid>``
    route: CallRoute = field(default_factory=CallRoute)  # the agent choice's inputs
    # Can go on on another worker (a pooled stream Twilio brings back, a room job redelivered):
    # its session is kept in Redis as it goes. A browser call cannot.
    movable: bool = False
    # Carries on the conversation such a session holds (a stream placed by /twilio/resume after
    # a lost worker or a transfer nobody took; a room job, which finds one only if redelivered).
    resumes: bool = False
    # Why it comes back, when it does (``ResumeAfter``: ``transfer_unanswered``).
    resume_after: str | None = None
    # Write RUNNING to the call's ledger entry on admission (a room job's was written when it
    # was claimed, with its claim latency).
    mark_running: bool = True
