"""``switchboard livekit setup``: the LiveKit SIP objects the call path needs, made idempotently
through ``livekit-api`` (on the local server of ``switchboard up --livekit`` or a real deployment).

- an inbound trunk answering the deployment's numbers (``SIPInboundTrunkInfo.numbers``: the
  called number of an INVITE picks the trunk; an INVITE to any other number is refused);
- a dispatch rule putting each call of that trunk in a room of its own, ``call-_<caller>_<random>``
  (``SIPDispatchRuleIndividual`` with the prefix ``call-``): the rooms the orchestrator answers;
- with the carrier's addresses, a catch-all trunk and rule for every other number, whose calls
  land in ``unassigned-…`` rooms that the orchestrator closes at once: the caller gets a final
  ``486`` instead of ringing forever (LiveKit's own answer to an INVITE matching no trunk is to
  drop it silently, after ``180 Ringing``: an anti-flood measure);
- optionally an outbound trunk (``SWITCHBOARD_LIVEKIT_OUTBOUND_TRUNK``) for outbound calls and
  warm transfers, towards a carrier's SIP address.

Each object is found by its name and updated to match when it differs, so running it again
changes nothing and a changed number list is applied in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from livekit import api as livekit_api

from switchboard.call_ids import CALL_ID_PREFIX
from switchboard.settings import Settings
from switchboard.telephony.livekit_sip import livekit_client

INBOUND_TRUNK_NAME = "switchboard-inbound"
OUTBOUND_TRUNK_NAME = "switchboard-outbound"
DISPATCH_RULE_NAME = "switchboard-calls"
ROOM_PREFIX = CALL_ID_PREFIX  # a room is named after its call
UNASSIGNED_TRUNK_NAME = "switchboard-unassigned"
UNASSIGNED_RULE_NAME = "switchboard-unassigned"
UNASSIGNED_PREFIX = "unassigned-"  # rooms of calls to numbers no agent answers


@dataclass(frozen=True)
class SipSetup:
    inbound_trunk_id: str
    dispatch_rule_id: str
    outbound_trunk_id: str | None
    unassigned_trunk_id: str | None
    changed: list[str]  # what this run created or updated


async def ensure_sip_setup(
    settings: Settings,
    numbers: list[str],
    *,
    outbound_address: str | None = None,
    outbound_numbers: list[str] | None = None,
    carrier_addresses: list[str] | None = None,
) -> SipSetup:
    """Make the inbound trunk, the dispatch rule and (with an address) the outbound trunk exist;
    with ``carrier_addresses`` (CIDRs the carrier signals from) also the catch-all trunk."""
    changed: list[str] = []
    async with livekit_client(settings) as lk:
        inbound = await _inbound_trunk(lk, INBOUND_TRUNK_NAME, changed, numbers=numbers)
        rule = await _dispatch_rule(lk, DISPATCH_RULE_NAME, ROOM_PREFIX, inbound.sip_trunk_id, changed)
        unassigned = None
        if carrier_addresses:
            unassigned = await _inbound_trunk(
                lk, UNASSIGNED_TRUNK_NAME, changed, allowed_addresses=carrier_addresses
            )
            await _dispatch_rule(
                lk, UNASSIGNED_RULE_NAME, UNASSIGNED_PREFIX, unassigned.sip_trunk_id, changed
            )
        outbound = None
        if outbound_address:
            outbound = await _outbound_trunk(lk, outbound_address, outbound_numbers or numbers, changed)
    return SipSetup(
        inbound.sip_trunk_id,
        rule.sip_dispatch_rule_id,
        outbound.sip_trunk_id if outbound else None,
        unassigned.sip_trunk_id if unassigned else None,
        changed,
    )


async def _inbound_trunk(
    lk: livekit_api.LiveKitAPI,
    name: str,
    changed: list[str],
    *,
    numbers: Sequence[str] = (),
    allowed_addresses: Sequence[str] = (),
) -> livekit_api.SIPInboundTrunkInfo:
    listed = await lk.sip.list_inbound_trunk(livekit_api.ListSIPInboundTrunkRequest())
    found = next((t for t in listed.items if t.name == name), None)
    if found is None:
        changed.append(f"{name} trunk created")
        return await lk.sip.create_inbound_trunk(
            livekit_api.CreateSIPInboundTrunkRequest(
                trunk=livekit_api.SIPInboundTrunkInfo(
                    name=name, numbers=list(numbers), allowed_addresses=list(allowed_addresses)
                )
            )
        )
    if sorted(found.numbers) != sorted(numbers) or sorted(found.allowed_addresses) != sorted(
        allowed_addresses
    ):
        changed.append(f"{name} trunk updated")
        found.ClearField("numbers")
        found.numbers.extend(numbers)
        found.ClearField("allowed_addresses")
        found.allowed_addresses.extend(allowed_addresses)
        return await lk.sip.update_inbound_trunk(found.sip_trunk_id, found)
    return found


async def _dispatch_rule(
    lk: livekit_api.LiveKitAPI, name: str, prefix: str, trunk_id: str, changed: list[str]
) -> livekit_api.SIPDispatchRuleInfo:
    rule = livekit_api.SIPDispatchRule(
        dispatch_rule_individual=livekit_api.SIPDispatchRuleIndividual(room_prefix=prefix)
    )
    listed = await lk.sip.list_dispatch_rule(livekit_api.ListSIPDispatchRuleRequest())
    found = next((r for r in listed.items if r.name == name), None)
    if found is None:
        changed.append(f"{name} dispatch rule created")
        return await lk.sip.create_dispatch_rule(
            livekit_api.CreateSIPDispatchRuleRequest(
                dispatch_rule=livekit_api.SIPDispatchRuleInfo(
                    name=name, rule=rule, trunk_ids=[trunk_id]
                )
            )
        )
    if found.rule != rule or list(found.trunk_ids) != [trunk_id]:
        changed.append(f"{name} dispatch rule updated")
        found.rule.CopyFrom(rule)
        found.ClearField("trunk_ids")
        found.trunk_ids.append(trunk_id)
        return await lk.sip.update_dispatch_rule(found.sip_dispatch_rule_id, found)
    return found


async def _outbound_trunk(
    lk: livekit_api.LiveKitAPI, address: str, numbers: list[str], changed: list[str]
) -> livekit_api.SIPOutboundTrunkInfo:
    listed = await lk.sip.list_outbound_trunk(livekit_api.ListSIPOutboundTrunkRequest())
    found = next((t for t in listed.items if t.name == OUTBOUND_TRUNK_NAME), None)
    if found is None:
        changed.append("outbound trunk created")
        return await lk.sip.create_outbound_trunk(
            livekit_api.CreateSIPOutboundTrunkRequest(
                trunk=livekit_api.SIPOutboundTrunkInfo(
                    name=OUTBOUND_TRUNK_NAME, address=address, numbers=numbers
                )
            )
        )
    if found.address != address or sorted(found.numbers) != sorted(numbers):
        changed.append("outbound trunk updated")
        found.address = address
        found.ClearField("numbers")
        found.numbers.extend(numbers)
        return await lk.sip.update_outbound_trunk(found.sip_trunk_id, found)
    return found
