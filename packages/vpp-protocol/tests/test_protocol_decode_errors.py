"""Arbitrary bytes either decode or raise DecodeError: nothing else escapes."""

from __future__ import annotations

import betterproto2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from protocol_strategies import agent_messages

import vpp_protocol as v


def _decode_or_error(
    cls: type[betterproto2.Message], data: bytes
) -> betterproto2.Message | v.DecodeError:
    """The message, or the DecodeError; any other exception propagates and fails the test."""
    try:
        return v.decode(cls, data)
    except v.DecodeError as exc:
        return exc


TARGETS = [v.AgentMessage, v.HeadendMessage, v.Telemetry, v.Register, v.Setpoint]


@pytest.mark.parametrize("cls", TARGETS, ids=lambda c: c.__name__)
@settings(max_examples=400)
@given(data=st.binary(max_size=200))
@example(data=b"\x0a\xff\xff\xff\xff\x0f")  # length prefix far past the end
@example(data=b"\x12\x02\x0a\xc3")  # truncated varint inside a nested message
@example(data=b"\x0a\x02\xc3\x28")  # invalid UTF-8 in a string field
@example(data=b"\x21\x00\x00")  # fixed64 cut short
@example(data=b"\x0f")  # wire type 7 does not exist
def test_arbitrary_bytes_decode_or_raise_decode_error(
    cls: type[betterproto2.Message], data: bytes
) -> None:
    outcome = _decode_or_error(cls, data)
    if isinstance(outcome, v.DecodeError):
        assert str(outcome).startswith(f"cannot decode {cls.__name__}: ")
    else:
        assert isinstance(outcome, cls)


@given(message=agent_messages, cut=st.integers(min_value=1, max_value=200))
def test_truncated_frames_decode_or_raise_decode_error(message: v.AgentMessage, cut: int) -> None:
    data = bytes(message)
    outcome = _decode_or_error(v.AgentMessage, data[: max(0, len(data) - cut)])
    assert isinstance(outcome, v.AgentMessage | v.DecodeError)


def test_a_length_past_the_end_is_refused_not_truncated() -> None:
    # betterproto2 alone would read the 2 bytes present as a (wrong) Register.
    with pytest.raises(v.DecodeError, match="field 1 of AgentMessage runs past the end"):
        v.decode(v.AgentMessage, b"\x0a\x05ab")


def test_a_truncated_nested_field_is_refused() -> None:
    reading = v.Telemetry(asset_id="site-a-pv-1", seq=9, power_kw=1.0)
    inner = bytes(reading)
    # The outer length is consistent; the asset_id inside claims more bytes than remain.
    corrupt = inner[:1] + bytes([100]) + inner[2:]
    outer = b"\x12" + bytes([len(corrupt)]) + corrupt
    with pytest.raises(v.DecodeError, match="field 1 of Telemetry runs past the end"):
        v.decode(v.AgentMessage, outer)


def test_a_known_field_with_the_wrong_wire_type_is_refused() -> None:
    # Telemetry.seq (field 2) is a varint; here it arrives as fixed64.
    with pytest.raises(v.DecodeError, match="wire type 1, expected 0"):
        v.decode(v.Telemetry, b"\x11" + bytes(8))


def test_decode_errors_are_value_errors() -> None:
    assert issubclass(v.DecodeError, ValueError)
