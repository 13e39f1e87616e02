"""Every message survives encode → decode; newer peers' unknown fields are skipped."""

from __future__ import annotations

import math

import betterproto2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from protocol_strategies import (
    acks,
    agent_messages,
    asset_descriptors,
    batches,
    closes,
    headend_messages,
    heartbeats,
    register_results,
    registers,
    releases,
    setpoints,
    telemetry,
)

import vpp_protocol as v

CASES = [
    (v.AssetDescriptor, asset_descriptors),
    (v.Register, registers),
    (v.RegisterResult, register_results),
    (v.Telemetry, telemetry),
    (v.TelemetryBatch, batches),
    (v.Setpoint, setpoints()),
    (v.Release, releases),
    (v.SetpointAck, acks),
    (v.Heartbeat, heartbeats),
    (v.SessionClosed, closes),
    (v.AgentMessage, agent_messages),
    (v.HeadendMessage, headend_messages),
]


@pytest.mark.parametrize(("cls", "strategy"), CASES, ids=[c.__name__ for c, _ in CASES])
@given(data=st.data())
def test_encode_decode_gives_the_same_message(
    cls: type[betterproto2.Message],
    strategy: st.SearchStrategy[betterproto2.Message],
    data: st.DataObject,
) -> None:
    message = data.draw(strategy)
    assert v.decode(cls, bytes(message)) == message


def _unknown_fields() -> st.SearchStrategy[bytes]:
    """Encoded fields with numbers no v1 message uses (a newer peer's additions)."""
    number = st.integers(min_value=100, max_value=2**29 - 1)
    varint = st.builds(lambda n, x: _key(n, 0) + _varint(x), number, st.integers(0, 2**63))
    fixed64 = st.builds(lambda n, b: _key(n, 1) + b, number, st.binary(min_size=8, max_size=8))
    blob = st.builds(lambda n, b: _key(n, 2) + _varint(len(b)) + b, number, st.binary(max_size=40))
    fixed32 = st.builds(lambda n, b: _key(n, 5) + b, number, st.binary(min_size=4, max_size=4))
    return st.lists(st.one_of(varint, fixed64, blob, fixed32), min_size=1, max_size=4).map(b"".join)


def _varint(n: int) -> bytes:
    return betterproto2.encode_varint(n)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


@given(message=agent_messages, extra=_unknown_fields())
def test_unknown_fields_from_a_newer_peer_are_skipped(
    message: v.AgentMessage, extra: bytes
) -> None:
    decoded = v.decode(v.AgentMessage, bytes(message) + extra)
    assert decoded == message


@given(reading=telemetry, extra=_unknown_fields())
def test_unknown_fields_inside_a_nested_message_are_skipped(
    reading: v.Telemetry, extra: bytes
) -> None:
    inner = bytes(reading) + extra
    outer = _key(2, 2) + _varint(len(inner)) + inner  # AgentMessage.telemetry = 2
    assert v.decode(v.AgentMessage, outer).telemetry == reading


def test_nan_power_survives_the_wire_as_nan() -> None:
    # The headend must see NaN to refuse it; the codec must not turn it into something else.
    decoded = v.decode(v.Telemetry, bytes(v.Telemetry(asset_id="a", seq=1, power_kw=math.nan)))
    assert math.isnan(decoded.power_kw)
