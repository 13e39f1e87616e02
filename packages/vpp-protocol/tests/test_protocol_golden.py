"""Golden wire vectors: our bytes are standard protobuf that google's (upb) parser reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden_messages import GOLDEN, TS
from google.protobuf import json_format

import vpp_protocol as v
from vpp_protocol.upb import pb

GOLDEN_DIR = Path(__file__).parent / "golden"
UPB_TYPES = {v.AgentMessage: pb.AgentMessage, v.HeadendMessage: pb.HeadendMessage}


def _vector(name: str) -> bytes:
    return (GOLDEN_DIR / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_we_still_encode_the_golden_bytes(name: str) -> None:
    assert bytes(GOLDEN[name]) == _vector(name)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_upb_reads_the_golden_bytes_as_the_same_message(name: str) -> None:
    ours = GOLDEN[name]
    theirs = UPB_TYPES[type(ours)].FromString(_vector(name))
    # Compare through the proto3 JSON mapping, which both libraries implement.
    as_json = json_format.MessageToDict(theirs, preserving_proto_field_name=False)
    assert type(ours).from_dict(as_json) == ours
    # And upb's own encoding of what it read decodes back to our message.
    assert v.decode(type(ours), theirs.SerializeToString()) == ours


def test_upb_sees_the_field_values_a_reader_in_any_language_would() -> None:
    batch = pb.AgentMessage.FromString(_vector("telemetry_batch")).telemetry_batch
    first, second = batch.readings
    assert first.asset_id == "site-a-bess-1"
    assert first.seq == 42
    assert first.power_kw == -120.5
    assert first.HasField("soc_pct")
    assert first.soc_pct == 61.25
    assert first.status == pb.ASSET_STATUS_OK
    assert first.ts.ToDatetime().replace(tzinfo=TS.tzinfo) == TS
    assert not second.HasField("soc_pct")  # optional fields stay distinguishable from 0

    setpoint = pb.HeadendMessage.FromString(_vector("setpoint_site")).setpoint
    assert setpoint.WhichOneof("target") == "site_id"
    assert setpoint.power_kw == -300.0

    legacy = pb.AgentMessage.FromString(_vector("legacy_telemetry")).telemetry
    assert legacy.asset_id == ""


def test_upb_sees_the_round_2_fields() -> None:
    batch = pb.AgentMessage.FromString(_vector("telemetry_envelope")).telemetry_batch
    genset, pv = batch.readings
    assert (genset.available_min_kw, genset.available_max_kw, genset.min_stable_kw) == (
        0.0,
        200.0,
        60.0,
    )
    assert genset.HasField("setpoint_ends_at")
    # PV at night: an envelope of [0, 0] is sent, and stays distinguishable from "unknown".
    assert pv.HasField("available_max_kw")
    assert pv.available_max_kw == 0.0
    assert not pv.HasField("min_stable_kw")
    assert not pv.HasField("setpoint_ends_at")

    release = pb.HeadendMessage.FromString(_vector("release"))
    assert release.WhichOneof("body") == "release"
    assert release.release.reason == "cancelled by operator"

    duration = pb.HeadendMessage.FromString(_vector("setpoint_duration")).setpoint
    assert duration.HasField("duration_s")
    assert not duration.HasField("ends_at")

    ack = pb.AgentMessage.FromString(_vector("ack_shortfall")).setpoint_ack
    assert (ack.requested_kw, ack.shortfall_kw) == (-300.0, -30.0)
    short = ack.allocations[1]
    assert short.applied_kw == -20.0
    assert short.limit_reason == pb.LIMIT_REASON_STATE_OF_CHARGE
    released = pb.AgentMessage.FromString(_vector("ack_released")).setpoint_ack
    assert released.state == pb.ACK_STATE_RELEASED
    assert released.release_cause == pb.RELEASE_CAUSE_CANCELLED


def test_round_1_messages_read_with_the_round_2_fields_unset() -> None:
    # A round-1 gateway's reading: no envelope means "cannot tell" (None), not [0, 0].
    reading = v.decode(v.AgentMessage, _vector("telemetry_batch")).telemetry_batch
    assert reading is not None
    first = reading.readings[0]
    assert first.available_min_kw is None
    assert first.available_max_kw is None
    assert first.min_stable_kw is None
    assert first.setpoint_ends_at is None
    setpoint = v.decode(v.HeadendMessage, _vector("setpoint_site")).setpoint
    assert setpoint is not None
    assert (setpoint.ends_at, setpoint.duration_s) == (None, None)
    ack = v.decode(v.AgentMessage, _vector("ack_allocations")).setpoint_ack
    assert ack is not None
    assert ack.requested_kw is None
    assert ack.release_cause == v.ReleaseCause.UNSPECIFIED
    assert all(a.applied_kw is None for a in ack.allocations)
