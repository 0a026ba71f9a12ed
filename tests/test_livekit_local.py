"""The local LiveKit's configuration and the small decisions around real LiveKit SIP calls, in
process: loopback-only config files holding the secret owner-only, the deployment's own keys,
the room names LiveKit SIP gives calls, and a room job's from/to numbers."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from switchboard.dispatch.models import Job, JobKind, SipAttributes
from switchboard.telephony import livekit_local as local
from switchboard.telephony.livekit import is_call_room
from switchboard.worker.jobs import job_numbers


def test_both_config_files_listen_on_loopback_only_and_are_owner_only(tmp_path: Path) -> None:
    keys = local.deployment_keys(tmp_path / "keys")
    ports = local.LiveKitPorts(http=17880, sip=15060)
    lk = local.prepare(tmp_path, ports, keys, "redis://127.0.0.1:6390/2", "http://127.0.0.1:8080/webhooks/livekit")
    server = yaml.safe_load(lk.server_config_path.read_text())
    sip = yaml.safe_load(lk.sip_config_path.read_text())
    assert server["bind_addresses"] == ["127.0.0.1"] and server["rtc"]["node_ip"] == "127.0.0.1"
    assert server["webhook"] == {"api_key": keys.api_key, "urls": ["http://127.0.0.1:8080/webhooks/livekit"]}
    assert server["redis"] == sip["redis"] == {"address": "127.0.0.1:6390", "db": 2}
    assert sip["listen_ip"] == "127.0.0.1" and sip["sip_port"] == 15060
    assert sip["ws_url"] == "ws://127.0.0.1:17880"
    for path in (lk.server_config_path, lk.sip_config_path, tmp_path / "keys"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_deployment_keys_are_made_once_and_then_kept(tmp_path: Path) -> None:
    first = local.deployment_keys(tmp_path / "keys")
    assert len(first.api_secret) >= local.MIN_SECRET_CHARS
    assert local.deployment_keys(tmp_path / "keys") == first


def test_rooms_livekit_sip_names_after_the_caller_are_call_rooms() -> None:
    # SIPDispatchRuleIndividual with the prefix "call-": {prefix}_{caller}_{random}
    assert is_call_room("call-_+15105550100_6jgXbZsZqcnm")
    assert not is_call_room("unassigned-_+15105550100_6jgXbZsZqcnm")
    assert not is_call_room("support-1")


def test_a_room_jobs_numbers_are_from_and_to_as_the_call_went() -> None:
    inbound = Job(kind=JobKind.LIVEKIT_ROOM, room="call-x", caller="+15105550100",
                  sip=SipAttributes(trunk_phone_number="+15550100", phone_number="+15105550100"))  # fmt: skip
    outbound = Job(kind=JobKind.LIVEKIT_ROOM, room="call-y",
                   sip=SipAttributes(trunk_phone_number="+15550100", phone_number="+15105550199"))  # fmt: skip
    assert job_numbers(inbound) == ("+15105550100", "+15550100")
    assert job_numbers(outbound) == ("+15550100", "+15105550199")
