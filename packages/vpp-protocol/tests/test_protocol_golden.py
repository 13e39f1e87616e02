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
