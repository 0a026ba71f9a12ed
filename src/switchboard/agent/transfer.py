"""Handing the caller to a person: cold (redirect now) or warm (call them first), recorded.

The phone call itself is moved by the ingress's :class:`~switchboard.telephony.base.CallControl`;
an ingress that cannot transfer, or a carrier that refuses, leaves the caller with the agent,
who apologises. A warm transfer nobody answers is said as such and the call goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from switchboard.agent.config import Intent
from switchboard.call.log import TransferRequested
from switchboard.observability import metrics
from switchboard.telephony.base import CallControlError, TransferOutcome, UnsupportedOperation

if TYPE_CHECKING:
    from switchboard.agent.call_control import CallController

_CONNECTED = (TransferOutcome.INITIATED, TransferOutcome.ANSWERED)


async def transfer(call: CallController, intent: Intent, target: str) -> None:
    """Transfer the call to ``target`` as ``intent`` says; record, count and follow up."""
    warm = intent.transfer_mode == "warm"
    call.on_hold = True  # no silence re-prompts while the carrier works
    try:
        if warm:
            summary = intent.transfer_summary.replace("{intent}", intent.name.replace("_", " "))
            outcome = await call.control.warm_transfer(target, summary)
        else:
            outcome = await call.control.transfer(target)
    except UnsupportedOperation as e:
        logger.warning(f"call control: cannot transfer on this call: {e}")
        outcome = TransferOutcome.UNSUPPORTED
    except CallControlError as e:
        logger.warning(f"call control: transfer to {target} failed: {e}")
        outcome = TransferOutcome.FAILED
    finally:
        call.on_hold = False
    call.log.add(
        TransferRequested(
            intent=intent.name, target=target, mode="warm" if warm else "cold", outcome=outcome.value
        )
    )
    metrics.TRANSFERS.labels(outcome=outcome.value).inc()
    if outcome in _CONNECTED:
        # The carrier now runs the call elsewhere; our side of the media ends.
        call.ending = True
        call.ended_by = "transfer"
        await call.worker.stop_when_done()
    elif warm and outcome in (TransferOutcome.BUSY, TransferOutcome.NO_ANSWER):
        await call.say(call.agent.transfer_unanswered)
    else:
        await call.say(call.agent.transfer_failed)
