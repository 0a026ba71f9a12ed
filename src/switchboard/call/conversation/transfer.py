"""Handing the caller to a person: cold (redirect now) or warm (call them first).

The phone call itself is moved by the ingress's :class:`~switchboard.telephony.base.CallControl`;
an ingress that cannot transfer, or a carrier that refuses, leaves the caller with the agent,
who apologises. A warm transfer nobody answers is said as such and the call goes on. This module
only asks the carrier and says how it went; the call controller logs it and acts on it.
"""

from __future__ import annotations

from loguru import logger

from switchboard.agent.config import Intent
from switchboard.call_log import TransferRequested
from switchboard.observability import metrics
from switchboard.telephony.base import (
    Brief,
    CallControl,
    CallControlError,
    TransferOutcome,
    UnsupportedOperation,
)

CONNECTED = (TransferOutcome.INITIATED, TransferOutcome.ANSWERED)
UNANSWERED = (TransferOutcome.BUSY, TransferOutcome.NO_ANSWER)


async def transfer(
    control: CallControl, intent: Intent, target: str, brief: Brief | None = None
) -> TransferRequested:
    """Transfer the call to ``target`` as ``intent`` says; count it and return what happened.
    ``brief``: how the agent says a warm transfer's summary where the carrier cannot."""
    warm = intent.transfer_mode == "warm"
    try:
        if warm:
            summary = intent.transfer_summary.replace("{intent}", intent.name.replace("_", " "))
            outcome = await control.warm_transfer(target, summary, brief)
        else:
            outcome = await control.transfer(target)
    except UnsupportedOperation as e:
        logger.warning(f"call control: cannot transfer on this call: {e}")
        outcome = TransferOutcome.UNSUPPORTED
    except CallControlError as e:
        logger.warning(f"call control: transfer to {target} failed: {e}")
        outcome = TransferOutcome.FAILED
    metrics.TRANSFERS.labels(outcome=outcome.value).inc()
    return TransferRequested(
        intent=intent.name, target=target, mode="warm" if warm else "cold", outcome=outcome.value
    )
